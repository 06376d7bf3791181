// The tests use the same PKCE pair as the inspector's connector.
export { pkcePair } from "../../inspector/connector.js";
