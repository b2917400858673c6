// Rebuild the bindings whenever the contract changes.
fn main() {
    println!("cargo:rerun-if-changed=wit/toolchain.wit");
}
