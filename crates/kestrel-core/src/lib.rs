//! kestrel-core: the kestreldb storage engine without N-API — the serial log with group commit,
//! recovery, the fault-injecting file layer, the version store and the page store. The byte
//! format is docs/FORMAT.md (`format`).

pub mod directory;
pub mod engine;
pub mod error;
pub mod flush;
pub mod format;
pub mod keybuf;
pub mod lock;
pub mod log;
pub mod merge;
pub mod pages;
pub mod pio;
pub mod store;
pub mod threads;
pub mod vfs;

pub use engine::{BackupPlan, Durability, Engine, Notify, Options, Sharing, Stats};
pub use error::{Code, Error, Result};
pub use flush::CheckpointOptions;
pub use log::reader::LogTail;
pub use store::{ScanBounds, ScavengeStep};
pub use threads::EngineHandle;
pub use vfs::{Errno, FaultOptions};
