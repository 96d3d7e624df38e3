//! Userspace iSCSI initiator library and verifying workload.
