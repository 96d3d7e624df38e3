//! Read data and status (RFC 7143 §11.4, §11.7): Data-In assembly by buffer
//! offset with DataSN checks, status in the last Data-In or a SCSI Response,
//! residuals, and sense data on CHECK CONDITION.

use bytes::Bytes;
use iscsi_proto::{DataIn, ScsiResponse};
use scsi::Sense;

use scsi::task::ScsiStatus;

use super::{Completion, Data, FullFeatureSession, ScsiResult};
use crate::error::{Error, TaskError};

impl FullFeatureSession {
    pub(super) fn on_data_in(&mut self, d: DataIn) -> Result<(), Error> {
        self.window(d.exp_cmd_sn, d.max_cmd_sn);
        let Some(task) = self.tasks.get_mut(&d.itt) else {
            return Err(Error::Protocol(format!(
                "Data-In for unknown ITT {:#x}",
                d.itt
            )));
        };
        match &mut task.data {
            Data::Read {
                buf,
                whole,
                next_data_sn,
            } => {
                if d.data_sn != *next_data_sn {
                    task.fault.get_or_insert("Data-In DataSN out of order");
                }
                *next_data_sn = d.data_sn.wrapping_add(1);
                let off = d.buffer_offset as usize;
                let end = off.saturating_add(d.data.len());
                if let Some(w) = whole.take() {
                    // Another Data-In after one that seemed to carry everything.
                    buf.extend_from_slice(&w);
                }
                if end > task.edtl as usize {
                    task.fault
                        .get_or_insert("Data-In beyond the expected transfer length");
                } else if off == 0 && end == task.edtl as usize && buf.is_empty() {
                    // All of it in one PDU: kept as it came, no copy.
                    *whole = Some(d.data);
                } else if off == buf.len() {
                    if buf.capacity() == 0 {
                        buf.reserve(task.edtl as usize);
                    }
                    // In order (DataPDUInOrder): appended, no zero-fill, one copy.
                    buf.extend_from_slice(&d.data);
                } else {
                    // Out of order or a gap: the gap reads as zeros until it arrives.
                    if buf.len() < end {
                        buf.resize(end, 0);
                    }
                    if let Some(dst) = buf.get_mut(off..end) {
                        dst.copy_from_slice(&d.data);
                    }
                }
            }
            _ => {
                task.fault
                    .get_or_insert("Data-In for a task without read data");
            }
        }
        if d.status_present {
            self.stat_sn(d.stat_sn);
            if !d.final_ {
                return Err(Error::Protocol("Data-In with S but not F".into()));
            }
            self.complete(
                d.itt,
                0,
                d.status,
                d.residual_underflow.then_some(d.residual_count),
                d.residual_overflow.then_some(d.residual_count),
                Bytes::new(),
            );
        }
        Ok(())
    }

    pub(super) fn on_response(&mut self, r: ScsiResponse) -> Result<(), Error> {
        self.window(r.exp_cmd_sn, r.max_cmd_sn);
        self.stat_sn(r.stat_sn);
        if !self.tasks.contains_key(&r.itt) {
            return Err(Error::Protocol(format!(
                "SCSI Response for unknown ITT {:#x}",
                r.itt
            )));
        }
        self.complete(
            r.itt,
            r.response,
            r.status,
            r.residual_underflow.then_some(r.residual_count),
            r.residual_overflow.then_some(r.residual_count),
            r.sense,
        );
        Ok(())
    }

    pub(super) fn complete(
        &mut self,
        itt: u32,
        response: u8,
        status: u8,
        underflow: Option<u32>,
        overflow: Option<u32>,
        sense: Bytes,
    ) {
        let Some(task) = self.tasks.remove(&itt) else {
            return;
        };
        let result = if response != 0 {
            Err(TaskError::TargetFailure(response))
        } else if status == ScsiStatus::CheckCondition as u8 {
            Err(Sense::parse(&sense)
                .map(TaskError::CheckCondition)
                .unwrap_or(TaskError::CheckConditionNoSense))
        } else if status != ScsiStatus::Good as u8 {
            Err(TaskError::Status(status))
        } else if let Some(f) = task.fault {
            Err(TaskError::Protocol(f))
        } else {
            let under = underflow.unwrap_or(0).min(task.edtl);
            let data = match task.data {
                Data::Read { whole: Some(w), .. } if w.len() >= (task.edtl - under) as usize => {
                    w.slice(..(task.edtl - under) as usize)
                }
                Data::Read { mut buf, whole, .. } => {
                    if let Some(w) = whole {
                        buf.extend_from_slice(&w);
                    }
                    // What the target did not send reads as zeros.
                    buf.resize((task.edtl - under) as usize, 0);
                    buf.freeze()
                }
                _ => Bytes::new(),
            };
            Ok(ScsiResult {
                data,
                residual_underflow: under,
                residual_overflow: overflow.unwrap_or(0),
            })
        };
        self.completions.push_back(Completion {
            id: task.id,
            result,
        });
    }
}
