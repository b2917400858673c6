//! The server layer's binary: the static `legion-serve` built for
//! `x86_64-unknown-linux-musl` (scripts/setup.sh), which runs on any Linux
//! base whatever its C library.

use std::path::{Path, PathBuf};

use crate::Error;

/// Where the static server binary is: `LEGION_SERVE_BIN`, else the
/// build tree beside the running `legion`
/// (`../x86_64-unknown-linux-musl/static/legion-serve`), else
/// `legion-serve` beside it (an installed pair).
pub fn find_server_binary() -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os("LEGION_SERVE_BIN") {
        let p = PathBuf::from(p);
        check_static(&p)?;
        return Ok(p);
    }
    let exe = std::env::current_exe().map_err(|e| Error::io(Path::new("legion"), e))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [
        dir.join("../x86_64-unknown-linux-musl/static/legion-serve"),
        dir.join("../../x86_64-unknown-linux-musl/static/legion-serve"),
        dir.join("legion-serve"),
    ];
    let mut last = None;
    for c in candidates {
        if c.is_file() {
            match check_static(&c) {
                Ok(()) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::Package {
        message: "no static legion-serve binary found: run scripts/setup.sh (cargo build --profile static --target x86_64-unknown-linux-musl -p legion-serve) or set LEGION_SERVE_BIN".into(),
    }))
}

/// Refuses a binary that needs a dynamic loader: an x86-64 ELF executable
/// with no `PT_INTERP` program header. Read by hand: it is one field of
/// one table of the ELF header, not worth a parser crate.
pub fn check_static(path: &Path) -> Result<(), Error> {
    let bad = |why: &str| Error::Package {
        message: format!(
            "{} cannot be the image's server: {why} (build it with scripts/setup.sh)",
            path.display()
        ),
    };
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return Err(bad("it is not a 64-bit little-endian ELF file"));
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let machine = u16_at(0x12);
    if machine != 0x3e {
        return Err(bad("it is not an x86-64 binary"));
    }
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap_or_default()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let at = phoff.saturating_add(i.saturating_mul(phentsize));
        let Some(p_type) = bytes.get(at..at + 4) else {
            return Err(bad("its program headers are cut short"));
        };
        const PT_INTERP: u32 = 3;
        if u32::from_le_bytes(p_type.try_into().unwrap_or_default()) == PT_INTERP {
            return Err(bad("it is dynamically linked"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_binaries_and_non_elf_files_are_refused() {
        // This test binary itself is dynamically linked against glibc.
        let me = std::env::current_exe().unwrap();
        let err = check_static(&me).unwrap_err().to_string();
        assert!(err.contains("dynamically linked"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("x");
        std::fs::write(&text, "#!/bin/sh\n").unwrap();
        assert!(check_static(&text)
            .unwrap_err()
            .to_string()
            .contains("not a 64-bit"));
    }
}
