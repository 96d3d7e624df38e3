//! Sans-IO core of a target connection (RFC 7143). Filled in by the connection-core work.
