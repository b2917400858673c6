// Rebuild the bindings whenever the contract changes (the WIT is reached
// through the `wit` symlink, which the proc macro's own tracking misses).
fn main() {
    println!("cargo:rerun-if-changed=wit/toolchain.wit");
    println!("cargo:rerun-if-changed=../wit/toolchain.wit");
}
