//! SCSI command handling (SPC-4, SBC-3) over a block-device trait, with a
//! file-backed device.
//!
//! The transport hands each command to [`LunTable::execute`] (or
//! [`LogicalUnit::execute`]) with its data-out; data-in is appended to a
//! caller-owned buffer. CDB parsing ([`cdb`]) and response building are
//! sans-IO; only [`device`] touches storage.

pub mod atomic;
pub mod cdb;
pub mod client;
pub mod data_in;
pub mod defect;
pub mod device;
pub mod identity;
pub mod inquiry;
pub mod lu;
pub mod lun;
pub mod mode;
pub mod mode_select;
pub mod opcodes;
pub mod persistent_reservation;
pub mod physical;
pub mod range_lock;
pub mod reservation;
pub mod sanitize;
pub mod sense;
pub mod statistics;
pub mod task;
pub mod transfer;
pub mod unit_attention;
pub mod xcopy;

pub use cdb::{Command, data_out_length};
pub use data_in::{DataSink, LendingDataIn, LentView};
pub use device::{BLOCK_SIZE, BlockDevice, DeviceError, FileDevice, MemDevice, NullDevice};
pub use identity::{Identity, IdentityError};
pub use lu::{Limits, LogicalUnit};
pub use lun::{LunTable, decode_lun, encode_lun};
pub use sense::{Asc, FIXED_SENSE_LEN, Sense, SenseKey};
pub use statistics::{ErrorStatus, LuFigures, LuStatistics};
pub use task::{Residual, ScsiOutcome, ScsiStatus, ScsiTask};
pub use unit_attention::UnitAttentions;
