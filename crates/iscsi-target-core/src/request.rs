//! SCSI work a connection core asks its shell to do (SAM-5 §5.1 execute command, §7 task
//! management): the core never touches the logical units itself.

use bytes::Bytes;
use scsi::{LendingDataIn, ScsiTask};

/// One piece of SCSI work, in the order the core emitted it.
#[derive(Debug)]
pub enum ScsiRequest {
    /// Execute a command, then hand it back with [`crate::Connection::on_scsi_complete`].
    Command(ScsiCommandRequest),
    /// LOGICAL UNIT RESET of the session's target's unit at `lun` (a LUN field).
    LunReset { lun: u64 },
    /// TARGET WARM or COLD RESET of the session's target: every unit.
    TargetReset,
    /// The session's I_T nexus is gone: its reservations are released.
    NexusLost { nexus: u64 },
}

/// The CDB of a command: the BHS's 16 bytes, or joined with an extended CDB AHS (§11.3.5).
#[derive(Debug, Clone)]
pub(crate) enum Cdb {
    Short([u8; 16]),
    Long(Bytes),
}

impl Cdb {
    pub(crate) fn new(bhs: [u8; 16], ext: Option<&Bytes>) -> Cdb {
        match ext {
            None => Cdb::Short(bhs),
            Some(ext) => Cdb::Long(Bytes::from([&bhs[..], ext].concat())),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Cdb::Short(c) => c,
            Cdb::Long(c) => c,
        }
    }
}

/// A SCSI command to execute on the session's target. Its data-in buffer comes from the
/// connection's pool; execution appends to it.
#[derive(Debug)]
pub struct ScsiCommandRequest {
    /// The command's Initiator Task Tag: unique among the connection's outstanding tasks.
    pub token: u32,
    /// LUN field (SAM-5 §4.7).
    pub lun: u64,
    /// Expected Data Transfer Length (§11.3.4).
    pub edtl: u32,
    /// R and W bits.
    pub read: bool,
    pub write: bool,
    /// I_T nexus id (set by the shell with [`crate::Connection::set_nexus`]).
    pub nexus: u64,
    /// Portal Group Tag the command came through.
    pub tpgt: u16,
    /// All the data the initiator sent for it.
    pub data_out: Bytes,
    /// Where data-in goes: a buffer (empty, with room for the EDTL when R is set), or a view
    /// of the medium a READ lends (not when DataDigest is on: its CRC reads the data here).
    pub data_in: LendingDataIn,
    pub(crate) cdb: Cdb,
    /// R2Ts sent for it: the ExpDataSN of its SCSI Response.
    pub(crate) r2ts: u32,
    /// True when `data_out` is a pool buffer to take back.
    pub(crate) pooled_out: bool,
}

impl ScsiCommandRequest {
    /// The whole CDB.
    pub fn cdb(&self) -> &[u8] {
        self.cdb.bytes()
    }

    /// The task to execute, its data-out and the data-in buffer, borrowed together.
    pub fn parts(&mut self) -> (ScsiTask<'_>, &[u8], &mut LendingDataIn) {
        let task = ScsiTask {
            cdb: self.cdb.bytes(),
            lun: self.lun,
            expected_data_transfer_length: self.edtl,
            tpgt: self.tpgt,
            nexus: self.nexus,
        };
        (task, &self.data_out, &mut self.data_in)
    }
}
