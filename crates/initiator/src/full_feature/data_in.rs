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
            Data::Read { buf, next_data_sn } => {
                if d.data_sn != *next_data_sn {
                    task.fault.get_or_insert("Data-In DataSN out of order");
                }
                *next_data_sn = d.data_sn.wrapping_add(1);
                let off = d.buffer_offset as usize;
                match buf.get_mut(off..off.saturating_add(d.data.len())) {
                    Some(dst) => dst.copy_from_slice(&d.data),
                    None => {
                        task.fault
                            .get_or_insert("Data-In beyond the expected transfer length");
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
                Data::Read { mut buf, .. } => {
                    buf.truncate((task.edtl - under) as usize);
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
