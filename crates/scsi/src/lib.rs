//! SCSI command handling (SPC-4, SBC-3) over a block-device trait, with a file-backed device.
