//! tracefs: where it is mounted, and the layout of tracepoint records from `format` files.
//!
//! Field offsets differ between kernels (and even between configs of one version), so the
//! programs never hard-code them: each offset is read here at start-up and handed in.
use std::{
    fs,
    path::{Path, PathBuf},
};

use thiserror::Error;

/// Places tracefs is found, newest first.
const TRACEFS_DIRS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it failed ({source}); mount it with \
         `mount -t tracefs tracefs /sys/kernel/tracing`"
    )]
    NotMounted {
        #[source]
        source: std::io::Error,
    },
    #[error(
        "tracefs is mounted, but its events/ directory is missing; mount it with \
         `mount -t tracefs tracefs /sys/kernel/tracing`"
    )]
    NoEvents,
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no field `{field}` in this tracepoint's format")]
    NoField { path: PathBuf, field: String },
    #[error("{path}: field `{field}` is {size} bytes, expected {expected}")]
    FieldSize {
        path: PathBuf,
        field: String,
        size: u32,
        expected: u32,
    },
}

/// One field of a tracepoint record.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Field {
    /// The C declaration without the name, e.g. `unsigned int`, `__data_loc char[]`.
    ty: String,
    name: String,
    offset: u32,
    size: u32,
    signed: bool,
}

/// The parsed `format` file of one tracepoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Format {
    name: String,
    id: Option<u32>,
    fields: Vec<Field>,
}

impl Format {
    /// Parses a tracefs `format` file. Lines that are not field declarations are ignored, so
    /// the print-fmt section and future additions do not break it.
    fn parse(text: &str) -> Format {
        let mut format = Format::default();
        for line in text.lines() {
            let line = line.trim();
            if let Some(name) = line.strip_prefix("name:") {
                format.name = name.trim().to_string();
            } else if let Some(id) = line.strip_prefix("ID:") {
                format.id = id.trim().parse().ok();
            } else if line.starts_with("field:")
                && let Some(field) = parse_field(line)
            {
                format.fields.push(field);
            }
        }
        format
    }

    fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// `field:unsigned int vec;<TAB>offset:8;<TAB>size:4;<TAB>signed:0;`
fn parse_field(line: &str) -> Option<Field> {
    let mut decl = None;
    let (mut offset, mut size, mut signed) = (None, None, false);
    for part in line.split(';') {
        let part = part.trim();
        if let Some(d) = part.strip_prefix("field:") {
            decl = Some(d.trim());
        } else if let Some(v) = part.strip_prefix("offset:") {
            offset = v.trim().parse().ok();
        } else if let Some(v) = part.strip_prefix("size:") {
            size = v.trim().parse().ok();
        } else if let Some(v) = part.strip_prefix("signed:") {
            signed = v.trim() == "1";
        }
    }
    let decl = decl?;
    // The name is the last identifier, except that an inline array puts `[N]` after it
    // (`char comm[16]`); `__data_loc char[] name` keeps its brackets on the type.
    let (bare, suffix) = match decl.rfind('[') {
        Some(i) if decl.ends_with(']') => (decl[..i].trim_end(), &decl[i..]),
        _ => (decl, ""),
    };
    let start = bare
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let name = &bare[start..];
    if name.is_empty() {
        return None;
    }
    let ty = format!("{}{suffix}", bare[..start].trim_end());
    Some(Field {
        ty: ty.trim().to_string(),
        name: name.to_string(),
        offset: offset?,
        size: size?,
        signed,
    })
}

/// A mounted tracefs.
#[derive(Clone, Debug)]
pub(crate) struct Tracefs {
    root: PathBuf,
}

impl Tracefs {
    /// Finds tracefs; when it is not mounted, mounts it at /sys/kernel/tracing (root only).
    /// `BALANCER_TRACEFS` names another directory to read formats from: tests use it to
    /// play a kernel that lacks a tracepoint.
    pub(crate) fn find_or_mount() -> Result<Tracefs, TracefsError> {
        if let Some(dir) = std::env::var_os("BALANCER_TRACEFS") {
            return Ok(Tracefs::at(PathBuf::from(dir)));
        }
        if let Some(t) = Self::find() {
            return Ok(t);
        }
        mount_tracefs(Path::new(TRACEFS_DIRS[0]))
            .map_err(|source| TracefsError::NotMounted { source })?;
        Self::find().ok_or(TracefsError::NoEvents)
    }

    /// A tracefs already mounted at one of the usual places.
    fn find() -> Option<Tracefs> {
        TRACEFS_DIRS
            .iter()
            .map(Path::new)
            .find(|p| p.join("events").is_dir())
            .map(|p| Tracefs::at(p.to_path_buf()))
    }

    fn at(root: PathBuf) -> Tracefs {
        Tracefs { root }
    }

    fn format_path(&self, category: &str, name: &str) -> PathBuf {
        self.root
            .join("events")
            .join(category)
            .join(name)
            .join("format")
    }

    /// The tracepoint's format, or `None` when this kernel does not have the tracepoint.
    pub(crate) fn format(
        &self,
        category: &str,
        name: &str,
    ) -> Result<Option<Format>, TracefsError> {
        let path = self.format_path(category, name);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(Format::parse(&text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(TracefsError::Read { path, source }),
        }
    }

    /// The offset of `field`, checking its size so a changed layout fails loudly instead of
    /// reading the wrong bytes.
    pub(crate) fn offset(
        &self,
        format: &Format,
        category: &str,
        name: &str,
        field: &str,
        size: u32,
    ) -> Result<u32, TracefsError> {
        let path = self.format_path(category, name);
        let f = format.field(field).ok_or_else(|| TracefsError::NoField {
            path: path.clone(),
            field: field.to_string(),
        })?;
        if f.size != size {
            return Err(TracefsError::FieldSize {
                path,
                field: field.to_string(),
                size: f.size,
                expected: size,
            });
        }
        Ok(f.offset)
    }
}

fn mount_tracefs(at: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    let target = CString::new(at.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let fstype = c"tracefs";
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAPI_POLL: &str = "name: napi_poll
ID: 2291
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:struct napi_struct * napi;\toffset:8;\tsize:8;\tsigned:0;
\tfield:__data_loc char[] dev_name;\toffset:16;\tsize:4;\tsigned:0;
\tfield:int work;\toffset:20;\tsize:4;\tsigned:1;
\tfield:int budget;\toffset:24;\tsize:4;\tsigned:1;

print fmt: \"napi poll on napi struct %p for device %s work %d budget %d\", REC->napi, __get_str(dev_name), REC->work, REC->budget
";

    #[test]
    fn parses_napi_poll_format() {
        let f = Format::parse(NAPI_POLL);
        assert_eq!(f.name, "napi_poll");
        assert_eq!(f.id, Some(2291));
        assert_eq!(f.fields.len(), 8);
        let napi = f.field("napi").unwrap();
        assert_eq!((napi.offset, napi.size, napi.signed), (8, 8, false));
        assert_eq!(napi.ty, "struct napi_struct *");
        let dev = f.field("dev_name").unwrap();
        assert_eq!((dev.offset, dev.size), (16, 4));
        assert_eq!(dev.ty, "__data_loc char[]");
        let work = f.field("work").unwrap();
        assert_eq!((work.offset, work.size, work.signed), (20, 4, true));
        assert_eq!(f.field("budget").unwrap().offset, 24);
        assert_eq!(f.field("common_pid").unwrap().offset, 4);
    }

    #[test]
    fn parses_arrays_and_other_kernels_offsets() {
        // An older layout with a padded common header and an inline array.
        let text = "name: softirq_entry\nID: 7\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:int common_padding;\toffset:8;\tsize:4;\tsigned:1;\n\
            \tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:1;\n\
            \tfield:unsigned int vec;\toffset:28;\tsize:4;\tsigned:0;\n";
        let f = Format::parse(text);
        assert_eq!(f.field("vec").unwrap().offset, 28);
        let comm = f.field("comm").unwrap();
        assert_eq!((comm.offset, comm.size), (12, 16));
        assert_eq!(comm.ty, "char[16]");
    }

    #[test]
    fn garbage_is_ignored_not_fatal() {
        let f = Format::parse("field:;offset:x;\nfield:int a;\toffset:4;\n\x00\nname:");
        assert!(f.fields.is_empty());
        assert_eq!(f.id, None);
    }

    #[test]
    fn offset_checks_size_and_presence() {
        let dir = std::env::temp_dir().join(format!("balancer-tracefs-{}", std::process::id()));
        let t = Tracefs::at(dir);
        let f = Format::parse(NAPI_POLL);
        assert_eq!(t.offset(&f, "napi", "napi_poll", "work", 4).unwrap(), 20);
        assert!(matches!(
            t.offset(&f, "napi", "napi_poll", "work", 8),
            Err(TracefsError::FieldSize { size: 4, .. })
        ));
        assert!(matches!(
            t.offset(&f, "napi", "napi_poll", "nope", 4),
            Err(TracefsError::NoField { .. })
        ));
    }

    #[test]
    fn missing_tracepoint_is_none() {
        let dir =
            std::env::temp_dir().join(format!("balancer-tracefs-none-{}", std::process::id()));
        let t = Tracefs::at(dir);
        assert!(t.format("napi", "napi_poll").unwrap().is_none());
    }
}
