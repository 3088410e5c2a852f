//! Struct field offsets from the kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Rust eBPF gets no CO-RE relocations, so the offsets the programs need inside kernel structs
//! are looked up here and passed in as globals.
use std::path::Path;

use btf_rs::{Btf, Type};

/// Where the kernel's own BTF lives.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Offsets inside `struct napi_struct`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NapiOffsets {
    /// `int irq`, recorded by drivers through `netif_napi_set_irq` (kernel 6.8+).
    pub irq: Option<u32>,
    /// `unsigned int napi_id`.
    pub napi_id: Option<u32>,
}

/// Reads the offsets from a BTF file; `Err` carries a one-line reason for the report.
pub fn napi_offsets(path: &Path) -> Result<NapiOffsets, String> {
    let btf = Btf::from_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let types = btf
        .resolve_types_by_name("napi_struct")
        .map_err(|e| format!("no struct napi_struct in {}: {e}", path.display()))?;
    let Some(Type::Struct(napi)) = types.into_iter().find(|t| matches!(t, Type::Struct(_))) else {
        return Err(format!("no struct napi_struct in {}", path.display()));
    };
    Ok(NapiOffsets {
        irq: member_offset(&btf, &napi, "irq", 4),
        napi_id: member_offset(&btf, &napi, "napi_id", 4),
    })
}

/// Byte offset of a named member of `size` bytes, looking into anonymous structs and unions
/// (kernels move fields into them between versions).
fn member_offset(btf: &Btf, s: &btf_rs::Struct, name: &str, size: usize) -> Option<u32> {
    for m in &s.members {
        if m.bitfield_size().is_some_and(|b| b != 0) || m.bit_offset() % 8 != 0 {
            continue;
        }
        let here = m.bit_offset() / 8;
        let member_name = btf.resolve_name(m).unwrap_or_default();
        let ty = resolve(btf, btf.resolve_chained_type(m).ok()?);
        if member_name == name {
            return match ty {
                Type::Int(i) if i.size() == size => Some(here),
                _ => None,
            };
        }
        if member_name.is_empty()
            && let Type::Struct(inner) | Type::Union(inner) = ty
            && let Some(off) = member_offset(btf, &inner, name, size)
        {
            return Some(here + off);
        }
    }
    None
}

/// Follows typedefs and qualifiers to the underlying type.
fn resolve(btf: &Btf, mut ty: Type) -> Type {
    for _ in 0..16 {
        match &ty {
            Type::Typedef(t) => match btf.resolve_chained_type(t) {
                Ok(next) => ty = next,
                Err(_) => break,
            },
            Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => {
                match btf.resolve_chained_type(t) {
                    Ok(next) => ty = next,
                    Err(_) => break,
                }
            }
            _ => break,
        }
    }
    ty
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_a_reason_not_a_panic() {
        let err = napi_offsets(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(err.contains("/nonexistent/vmlinux"), "{err}");
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
        if let Some(irq) = offs.irq {
            assert!(irq > 0 && irq % 4 == 0, "{offs:?}");
        }
    }
}
