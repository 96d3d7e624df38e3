//! Multi-portal iSCSI target: one processor (OS thread + event loop) per portal.
