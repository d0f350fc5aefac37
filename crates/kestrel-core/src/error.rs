//! Errors of the engine, one enum per operation family, each mapped to a stable `KESTREL_*`
//! code that the binding puts on the JavaScript error's `code`.

use std::fmt;
use std::io;

/// A stable error code, shared with the TypeScript `KestrelError`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Corrupt,
    Io,
    DiskFull,
    Closed,
    NotADatabase,
    FormatVersion,
    InvalidArgument,
    Locked,
    /// Sharing: a newer checkpoint on disk covers commits this engine has not applied yet.
    Behind,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Corrupt => "KESTREL_CORRUPT",
            Code::Io => "KESTREL_IO",
            Code::DiskFull => "KESTREL_DISK_FULL",
            Code::Closed => "KESTREL_CLOSED",
            Code::NotADatabase => "KESTREL_NOT_A_DATABASE",
            Code::FormatVersion => "KESTREL_FORMAT_VERSION",
            Code::InvalidArgument => "KESTREL_INVALID_ARGUMENT",
            Code::Locked => "KESTREL_LOCKED",
            Code::Behind => "KESTREL_BEHIND",
        }
    }
}

/// An engine error: a code and a message that says what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub code: Code,
    pub message: String,
}

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Error { code, message: message.into() }
    }

    /// An I/O error while doing `what`; ENOSPC becomes `KESTREL_DISK_FULL`.
    pub fn io(what: &str, err: &io::Error) -> Self {
        if is_enospc(err) {
            Error::new(Code::DiskFull, format!("{what}: the disk is full ({err}); free disk space and reopen the database"))
        } else {
            Error::new(Code::Io, format!("{what}: {err}; check the disk and reopen the database"))
        }
    }

    pub fn closed() -> Self {
        Error::new(Code::Closed, "the database is closed; open it again to use it")
    }
}

/// `map_err` adapter: an I/O error while doing `what` (see [`Error::io`]).
pub(crate) fn io(what: String) -> impl FnOnce(io::Error) -> Error {
    move |e| Error::io(&what, &e)
}

/// Is this I/O error "no space left on device" (real or injected)?
pub fn is_enospc(err: &io::Error) -> bool {
    err.raw_os_error() == Some(28) || err.to_string().contains("ENOSPC")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
