// Exchange ids where several replicas write one PostgreSQL database. A proxy numbers each exchange
// when it starts (the live feed, the logs and the handshakes name it by that id long before it is
// written), so ids cannot come from the insert; they come in blocks from a shared sequence, each
// replica numbering from its own block. Two replicas never share an id (an insert that collided
// would be lost to ON CONFLICT DO NOTHING), and a replica asks the database once per block, off
// the request path: the next block is reserved while half of the current one is left.
import type { Pool } from "pg";

/** Ids a block holds: at 1,000 exchanges a second, a block lasts 17 minutes, two 35. */
export const ID_BLOCK_SIZE = 2 ** 20;

/** Reserves the next block: block n holds ids n·SIZE + 1 … (n + 1)·SIZE (`end` excluded). */
export async function reserveBlock(pool: Pool): Promise<{ next: number; end: number }> {
  const { rows } = await pool.query<{ block: number }>("SELECT nextval('exchange_id_blocks') AS block");
  const block = Number(rows[0]!.block);
  return { next: block * ID_BLOCK_SIZE + 1, end: (block + 1) * ID_BLOCK_SIZE + 1 };
}

/** After a failed reservation the next waits this long, doubling up to the max: a database that is down is not asked at every request. */
const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 30_000;

export class IdBlocks {
  private spare: { next: number; end: number } | null = null;
  private reserving = false;
  private retryAt = 0;
  private retryMs = RETRY_MIN_MS;
  /** Failures since the last reservation that worked: reported once each outage. */
  private failures = 0;

  private constructor(
    private readonly pool: Pool,
    private current: { next: number; end: number },
    private readonly onError: (err: unknown) => void,
  ) {}

  /** Reserves the first block: a proxy that cannot starts with a clear error, before it listens. */
  static async start(pool: Pool, onError: (err: unknown) => void): Promise<IdBlocks> {
    return new IdBlocks(pool, await reserveBlock(pool), onError);
  }

  /**
   * The next id, or null when both blocks are spent and the database cannot hand out another
   * (it has been unreachable for as long as two blocks last): the exchange is then forwarded but
   * not recorded, and counted as dropped. Never waits.
   */
  take(): number | null {
    if (this.current.next >= this.current.end) {
      if (!this.spare) {
        this.reserveSpare();
        return null;
      }
      this.current = this.spare;
      this.spare = null;
    }
    const id = this.current.next++;
    if (!this.spare && this.current.end - this.current.next < ID_BLOCK_SIZE / 2) this.reserveSpare();
    return id;
  }

  private reserveSpare(): void {
    if (this.reserving || Date.now() < this.retryAt) return;
    this.reserving = true;
    reserveBlock(this.pool).then(
      (block) => {
        this.spare = block;
        this.reserving = false;
        this.failures = 0;
        this.retryMs = RETRY_MIN_MS;
      },
      (err: unknown) => {
        this.reserving = false;
        if (this.failures++ === 0) this.onError(err);
        this.retryAt = Date.now() + this.retryMs;
        this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2);
      },
    );
  }
}
