//! Reassembling a snapshot from its chunks on the receiving node, checking each chunk's
//! checksum as it arrives and the whole image's checksums after the last one, before
//! openraft sees any of it: a damaged transfer is refused (the sender starts again from
//! offset 0) and never installed.

use haven_core::limits::SNAPSHOT_BYTES_MAX;
use haven_store::integrity::hash;
use haven_store::snapshot_file::is_image;
use haven_store::snapshot_file::SnapshotImage;
use haven_store::SnapshotMeta;
use haven_store::Vote;

use crate::SnapshotChunk;

/// A snapshot received whole.
pub struct CompleteSnapshot {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

/// Collects chunks in order; a chunk at offset 0 starts over (the sender restarted).
#[derive(Default)]
pub struct SnapshotAssembler {
    in_progress: Option<(SnapshotMeta, u64, Vec<u8>)>,
}

impl SnapshotAssembler {
    /// Takes the next chunk. Returns the whole snapshot after its last chunk, `None` before,
    /// or an error (the sender should start again from offset 0).
    pub fn accept(&mut self, chunk: SnapshotChunk) -> Result<Option<CompleteSnapshot>, String> {
        if chunk.total_bytes > SNAPSHOT_BYTES_MAX {
            self.in_progress = None;
            return Err(format!("snapshot of {} bytes exceeds the limit of {SNAPSHOT_BYTES_MAX}", chunk.total_bytes));
        }
        if chunk.offset == 0 {
            self.in_progress = Some((chunk.meta.clone(), chunk.total_bytes, Vec::new()));
        }
        let Some((meta, total, buffer)) = self.in_progress.as_mut() else {
            return Err("snapshot chunk without a start; resend from offset 0".into());
        };
        if *meta != chunk.meta || *total != chunk.total_bytes || chunk.offset != buffer.len() as u64 {
            self.in_progress = None;
            return Err("snapshot chunk out of order; resend from offset 0".into());
        }
        if buffer.len() as u64 + chunk.data.len() as u64 > *total {
            self.in_progress = None;
            return Err("snapshot chunk past the announced size".into());
        }
        if hash(&chunk.data) != chunk.data_hash {
            self.in_progress = None;
            return Err(format!(
                "snapshot chunk at bytes {}..{}: checksum mismatch (damaged in transfer); resend from offset 0",
                chunk.offset,
                chunk.offset + chunk.data.len() as u64
            ));
        }
        buffer.extend_from_slice(&chunk.data);
        if (buffer.len() as u64) < *total {
            return Ok(None);
        }
        let Some((meta, _, data)) = self.in_progress.take() else {
            return Ok(None);
        };
        // An older sender sends the bare encoded state (no image, nothing to check here).
        if is_image(&data) {
            let origin = std::path::Path::new("the snapshot received");
            let image =
                SnapshotImage::verify(data, origin).map_err(|error| format!("{error}; resend from offset 0"))?;
            if image.meta() != &meta {
                return Err("the snapshot image does not hold the snapshot its chunks announced; resend".into());
            }
            return Ok(Some(CompleteSnapshot { vote: chunk.vote, meta, data: image.into_bytes() }));
        }
        Ok(Some(CompleteSnapshot { vote: chunk.vote, meta, data }))
    }
}
