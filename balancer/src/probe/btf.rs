//! Struct field offsets from the kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Rust eBPF gets no CO-RE relocations, so the offsets the programs need inside kernel structs
//! are looked up here and passed in as globals.
//!
//! Two offsets in one struct need no type graph: this scans the type section once, keeping
//! only each type's position. A full BTF library builds maps of all ~100k kernel types, which
//! made the daemon's start-up peak 43 MiB for two numbers.
use std::path::{Path, PathBuf};

/// Where the kernel's own BTF lives.
pub(crate) const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Offsets inside `struct napi_struct` and `struct net_device`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct NapiOffsets {
    /// `int irq`, recorded by drivers through `netif_napi_set_irq` (kernel 6.8+).
    pub(crate) irq: Option<u32>,
    /// `unsigned int napi_id`.
    pub(crate) napi_id: Option<u32>,
    /// `struct net_device *dev`: raw and BTF-typed programs find the device name through it.
    pub(crate) dev: Option<u32>,
    /// `char name[IFNAMSIZ]` in `struct net_device`.
    pub(crate) dev_name: Option<u32>,
    /// `pid_t pid` in `struct task_struct`: the next task of raw and BTF-typed
    /// `sched_switch` programs.
    pub(crate) task_pid: Option<u32>,
    /// `unsigned long nvcsw, nivcsw` in `struct task_struct`: a busy-poll loop's context
    /// switches.
    pub(crate) task_nvcsw: Option<u32>,
    pub(crate) task_nivcsw: Option<u32>,
    /// `se.sum_exec_runtime` and `se.prev_sum_exec_runtime` in `struct task_struct`
    /// (`struct sched_entity se`): the scheduler's run time of a NAPI kthread's current run,
    /// which starts before the `sched_switch` that opens the probe's window.
    pub(crate) task_sum_exec: Option<u32>,
    pub(crate) task_prev_sum_exec: Option<u32>,
    /// `struct rq` has `prev_irq_time`: the kernel has CONFIG_IRQ_TIME_ACCOUNTING, so a
    /// task's run time leaves out the interrupts that ran inside it.
    pub(crate) irq_time_accounting: bool,
}

/// Why the offsets could not be read; each message is one line for the report (the probe
/// then links NAPI instances by co-occurrence).
#[derive(Debug, thiserror::Error)]
pub(crate) enum BtfError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {why}", path.display())]
    Malformed { path: PathBuf, why: Malformed },
    #[error("no struct napi_struct in {}", path.display())]
    NoNapiStruct { path: PathBuf },
}

/// What is wrong with a BTF blob.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Malformed {
    #[error("too short for a BTF header")]
    Short,
    #[error("not BTF (magic {0:#06x})")]
    Magic(u16),
    #[error("truncated BTF header")]
    Header,
    #[error("BTF section outside the file")]
    Section,
    #[error("truncated BTF type")]
    Type,
    #[error("unknown BTF kind {0}")]
    Kind(u32),
}

/// Reads the offsets from a BTF file.
pub(crate) fn napi_offsets(path: &Path) -> Result<NapiOffsets, BtfError> {
    let data = std::fs::read(path).map_err(|source| BtfError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let btf = Btf::parse(&data).map_err(|why| BtfError::Malformed {
        path: path.to_path_buf(),
        why,
    })?;
    let napi = btf
        .struct_named("napi_struct")
        .ok_or_else(|| BtfError::NoNapiStruct {
            path: path.to_path_buf(),
        })?;
    let dev_name = btf
        .struct_named("net_device")
        .and_then(|d| btf.member_offset(d, "name", Member::CharArray(16)));
    let task = btf.struct_named("task_struct");
    let task_member = |name, want| task.and_then(|t| btf.member_offset(t, name, want));
    let se = task_member("se", Member::Struct);
    let entity = btf.struct_named("sched_entity");
    let sched_entity_member = |name| {
        let inner = entity.and_then(|e| btf.member_offset(e, name, Member::Int(8)))?;
        Some(se? + inner)
    };
    Ok(NapiOffsets {
        irq: btf.member_offset(napi, "irq", Member::Int(4)),
        napi_id: btf.member_offset(napi, "napi_id", Member::Int(4)),
        dev: btf.member_offset(napi, "dev", Member::Pointer),
        dev_name,
        task_pid: task_member("pid", Member::Int(4)),
        task_nvcsw: task_member("nvcsw", Member::Int(8)),
        task_nivcsw: task_member("nivcsw", Member::Int(8)),
        task_sum_exec: sched_entity_member("sum_exec_runtime"),
        task_prev_sum_exec: sched_entity_member("prev_sum_exec_runtime"),
        irq_time_accounting: btf
            .struct_named("rq")
            .and_then(|r| btf.member_offset(r, "prev_irq_time", Member::Int(8)))
            .is_some(),
    })
}

/// The shape a member must have for the programs to read it.
#[derive(Clone, Copy, Debug)]
enum Member {
    /// An integer of this many bytes.
    Int(u32),
    Pointer,
    /// `char[len]`.
    CharArray(u32),
    /// A struct (not through a pointer).
    Struct,
}

// Kinds (include/uapi/linux/btf.h) and the bytes each one's record carries after the common
// 12-byte header.
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;
const MAGIC: u16 = 0xeb9f;

fn trailer_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        1 | 14 | 17 => 4,                            // INT, VAR, DECL_TAG
        2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, quals, FUNC, FLOAT, TYPE_TAG
        3 => 12,                                     // ARRAY
        4 | 5 | 15 | 19 => 12 * vlen,                // STRUCT, UNION, DATASEC, ENUM64
        6 | 13 => 8 * vlen,                          // ENUM, FUNC_PROTO
        _ => return None,
    })
}

/// A parsed view of a BTF blob: positions of the types, nothing else.
#[derive(Debug)]
struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Byte position of type id `i + 1` in `types` (id 0 is void).
    offsets: Vec<u32>,
}

#[derive(Clone, Copy)]
struct Type {
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    /// `size` for INT/STRUCT/UNION, referenced type id for typedefs and qualifiers.
    size_or_type: u32,
    /// Position of the trailer.
    at: usize,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

impl<'a> Btf<'a> {
    fn parse(data: &'a [u8]) -> Result<Btf<'a>, Malformed> {
        let magic = data
            .get(0..2)
            .map(|m| u16::from_ne_bytes([m[0], m[1]]))
            .ok_or(Malformed::Short)?;
        if magic != MAGIC {
            return Err(Malformed::Magic(magic));
        }
        let field = |i: usize| u32_at(data, 4 + 4 * i).ok_or(Malformed::Header);
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);
        let section = |off: u32, len: u32| {
            let start = hdr_len as usize + off as usize;
            data.get(start..start + len as usize)
                .ok_or(Malformed::Section)
        };
        let types = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?;
        let mut offsets = Vec::new();
        let mut at = 0;
        while at < types.len() {
            let info = u32_at(types, at + 4).ok_or(Malformed::Type)?;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let trailer = trailer_len(kind, vlen).ok_or(Malformed::Kind(kind))?;
            offsets.push(at as u32);
            at += 12 + trailer;
        }
        Ok(Btf {
            types,
            strings,
            offsets,
        })
    }

    fn get(&self, id: u32) -> Option<Type> {
        let at = *self.offsets.get((id as usize).checked_sub(1)?)? as usize;
        let info = u32_at(self.types, at + 4)?;
        Some(Type {
            name_off: u32_at(self.types, at)?,
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 == 1,
            size_or_type: u32_at(self.types, at + 8)?,
            at: at + 12,
        })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|b| *b == 0).unwrap_or(rest.len())]
    }

    fn struct_named(&self, name: &str) -> Option<Type> {
        (1..=self.offsets.len() as u32)
            .filter_map(|id| self.get(id))
            .find(|t| t.kind == KIND_STRUCT && self.name(t.name_off) == name.as_bytes())
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<Type> {
        for _ in 0..32 {
            let t = self.get(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type;
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// Byte offset of member `name` of the given shape, looking into anonymous structs and
    /// unions (kernels move fields into them between versions).
    fn member_offset(&self, s: Type, name: &str, want: Member) -> Option<u32> {
        self.member_offset_depth(s, name, want, 0)
    }

    /// Whether `t` has the shape the programs read it as.
    fn is(&self, t: Type, want: Member) -> bool {
        match want {
            Member::Int(size) => t.kind == KIND_INT && t.size_or_type == size,
            Member::Pointer => t.kind == KIND_PTR,
            Member::Struct => t.kind == KIND_STRUCT,
            Member::CharArray(len) => {
                // struct btf_array { type, index_type, nelems } after the header.
                t.kind == KIND_ARRAY
                    && u32_at(self.types, t.at + 8) == Some(len)
                    && u32_at(self.types, t.at)
                        .and_then(|elem| self.resolve(elem))
                        .is_some_and(|e| e.kind == KIND_INT && e.size_or_type == 1)
            }
        }
    }

    fn member_offset_depth(&self, s: Type, name: &str, want: Member, depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        for i in 0..s.vlen {
            let m = s.at + 12 * i;
            let (name_off, ty, offset) = (
                u32_at(self.types, m)?,
                u32_at(self.types, m + 4)?,
                u32_at(self.types, m + 8)?,
            );
            // With kind_flag the top 8 bits are a bitfield size; a bitfield is never ours.
            let (bits, bitfield) = if s.kind_flag {
                (offset & 0xff_ffff, offset >> 24 != 0)
            } else {
                (offset, false)
            };
            if bitfield || bits % 8 != 0 {
                continue;
            }
            let member_name = self.name(name_off);
            let resolved = self.resolve(ty)?;
            if member_name == name.as_bytes() {
                return self.is(resolved, want).then_some(bits / 8);
            }
            if member_name.is_empty()
                && matches!(resolved.kind, KIND_STRUCT | KIND_UNION)
                && let Some(inner) = self.member_offset_depth(resolved, name, want, depth + 1)
            {
                return Some(bits / 8 + inner);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob built by hand: strings, then types given as (name, info, size/type,
    /// trailer words).
    fn blob(strings: &[&str], types: &[(u32, u32, u32, Vec<u32>)]) -> Vec<u8> {
        let mut strs = vec![0u8];
        for s in strings {
            strs.extend_from_slice(s.as_bytes());
            strs.push(0);
        }
        let mut ty = Vec::new();
        for (name, info, st, words) in types {
            for w in [*name, *info, *st].iter().chain(words) {
                ty.extend_from_slice(&w.to_ne_bytes());
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_ne_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            ty.len() as u32,
            ty.len() as u32,
            strs.len() as u32,
        ] {
            out.extend_from_slice(&w.to_ne_bytes());
        }
        out.extend_from_slice(&ty);
        out.extend_from_slice(&strs);
        out
    }

    fn info(kind: u32, vlen: u32, kind_flag: bool) -> u32 {
        (u32::from(kind_flag) << 31) | (kind << 24) | vlen
    }

    /// Name offsets into the string table of [`synthetic`].
    const S_INT: u32 = 1; // "int"
    const S_NAPI: u32 = 5; // "napi_struct"
    const S_IRQ: u32 = 17; // "irq"
    const S_ID: u32 = 21; // "napi_id"
    const S_U32: u32 = 29; // "u32"
    const S_STATE: u32 = 33; // "state"

    /// `struct napi_struct { unsigned long state; union { int irq:3; }; struct { u32 pad;
    /// int irq; }; const u32 napi_id; }` with `u32` a typedef, at byte offsets 0, 8, 16, 24.
    fn synthetic() -> Vec<u8> {
        let strings = ["int", "napi_struct", "irq", "napi_id", "u32", "state"];
        let types = vec![
            // 1: int (4 bytes)
            (S_INT, info(KIND_INT, 0, false), 4, vec![0x0100_0020]),
            // 2: typedef u32 -> int
            (S_U32, info(KIND_TYPEDEF, 0, false), 1, vec![]),
            // 3: const u32
            (0, info(KIND_CONST, 0, false), 2, vec![]),
            // 4: anonymous union { int irq:3 } (a bitfield: never taken)
            (0, info(KIND_UNION, 1, true), 4, vec![S_IRQ, 1, 3 << 24]),
            // 5: anonymous struct { u32 pad; int irq; }
            (
                0,
                info(KIND_STRUCT, 2, false),
                8,
                vec![S_STATE, 2, 0, S_IRQ, 1, 32],
            ),
            // 6: struct napi_struct
            (
                S_NAPI,
                info(KIND_STRUCT, 4, false),
                32,
                vec![S_STATE, 1, 0, 0, 4, 64, 0, 5, 128, S_ID, 3, 192],
            ),
        ];
        blob(&strings, &types)
    }

    #[test]
    fn finds_members_through_anonymous_types_and_typedefs() {
        let data = synthetic();
        let btf = Btf::parse(&data).unwrap();
        let napi = btf.struct_named("napi_struct").unwrap();
        // The bitfield `irq` in the union is skipped; the one in the struct at 16 + 4 counts.
        assert_eq!(btf.member_offset(napi, "irq", Member::Int(4)), Some(20));
        assert_eq!(btf.member_offset(napi, "napi_id", Member::Int(4)), Some(24));
        assert_eq!(
            btf.member_offset(napi, "irq", Member::Int(8)),
            None,
            "size is checked"
        );
        assert_eq!(
            btf.member_offset(napi, "irq", Member::Pointer),
            None,
            "kind is checked"
        );
        assert_eq!(btf.member_offset(napi, "nope", Member::Int(4)), None);
        assert!(btf.struct_named("sk_buff").is_none());
    }

    #[test]
    fn bad_blobs_are_reasons_not_panics() {
        assert!(Btf::parse(&[]).is_err());
        assert_eq!(Btf::parse(&[0, 0, 0, 0]).err(), Some(Malformed::Magic(0)));
        let mut data = synthetic();
        data.truncate(40);
        assert!(Btf::parse(&data).is_err());
        let err = napi_offsets(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(matches!(err, BtfError::Read { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/vmlinux"), "{err}");
        // Every truncation of a valid blob is an error or a clean answer.
        let data = synthetic();
        for n in 0..data.len() {
            if let Ok(btf) = Btf::parse(&data[..n])
                && let Some(s) = btf.struct_named("napi_struct")
            {
                let _ = btf.member_offset(s, "irq", Member::Int(4));
            }
        }
    }

    /// On a kernel with BTF, napi_struct exists and napi_id is found; `irq` exists from 6.8.
    #[test]
    fn reads_the_running_kernels_napi_struct() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            eprintln!("skipped: {VMLINUX_BTF} not present");
            return;
        }
        let offs = napi_offsets(path).unwrap();
        assert!(offs.napi_id.is_some(), "{offs:?}");
        // Raw and BTF-typed napi_poll programs follow napi->dev->name.
        assert!(offs.dev.is_some_and(|d| d % 8 == 0), "{offs:?}");
        assert!(offs.dev_name.is_some(), "{offs:?}");
        if let Some(irq) = offs.irq {
            assert!(irq > 0 && irq % 4 == 0, "{offs:?}");
        }
        // sched_switch and busy-poll timing read these from task_struct.
        assert!(offs.task_pid.is_some_and(|p| p % 4 == 0), "{offs:?}");
        let (v, iv) = (offs.task_nvcsw.unwrap(), offs.task_nivcsw.unwrap());
        assert_eq!(iv, v + 8, "nivcsw follows nvcsw: {offs:?}");
        // A NAPI kthread's run as the scheduler counts it: two u64 of the embedded
        // sched_entity in task_struct, at most two fields apart.
        let (sum, prev) = (
            offs.task_sum_exec.unwrap(),
            offs.task_prev_sum_exec.unwrap(),
        );
        assert!(sum % 8 == 0 && prev % 8 == 0 && sum != prev, "{offs:?}");
        assert!(
            sum.abs_diff(prev) <= 24,
            "both in one sched_entity: {offs:?}"
        );
    }
}
