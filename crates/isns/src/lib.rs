//! iSNS server (crash-safe registry, SCN) and async client (RFC 4171).
