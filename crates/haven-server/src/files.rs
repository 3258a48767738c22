//! Files a node keeps in its data dir for operators and tools: `haven.pid` and `addr.json`.

use std::path::Path;
use std::path::PathBuf;

use serde::Deserialize;
use serde::Serialize;

/// `DATA_DIR/addr.json`: where this node listens, for tools and tests that bind port 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrFile {
    pub node_id: u64,
    pub client_url: String,
    pub peer_addr: String,
    pub pid: u32,
}

pub fn pid_path(data_dir: &Path) -> PathBuf {
    data_dir.join("haven.pid")
}

pub fn addr_path(data_dir: &Path) -> PathBuf {
    data_dir.join("addr.json")
}

/// Writes `contents` to `path` atomically (temp file, then rename), so a reader never sees
/// half a file.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

pub fn write_pid_and_addr(data_dir: &Path, addr: &AddrFile) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(addr).map_err(std::io::Error::other)?;
    write_atomically(&addr_path(data_dir), &json)?;
    write_atomically(&pid_path(data_dir), format!("{}\n", addr.pid).as_bytes())
}

pub fn remove_pid(data_dir: &Path) {
    let _ = std::fs::remove_file(pid_path(data_dir));
}
