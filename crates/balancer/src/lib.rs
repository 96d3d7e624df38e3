//! Balancer policy (patent JP4675664B2): configuration table and loads in, decisions out. No I/O.
