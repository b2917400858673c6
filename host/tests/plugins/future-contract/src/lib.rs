//! A trainer built against `legion:toolchain@9.0.0`, which the host must refuse.

wit_bindgen::generate!({ world: "future-plugin", path: "wit" });

struct Future;

impl exports::legion::toolchain::trainer::Guest for Future {
    fn describe() -> String {
        "from the future".to_string()
    }
}

export!(Future);
