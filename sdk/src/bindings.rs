//! The `tollgate:tool` world as wit-bindgen generates it from `sdk/wit` (a link to the
//! repository's `wit/`), and nothing else. Authors never touch this module: the typed API
//! around it is the rest of the crate, and `export_tool!` wires a `Tool` to its exports.

wit_bindgen::generate!({
    path: "wit",
    world: "tollgate:tool/tool@0.1.0",
    pub_export_macro: true,
    export_macro_name: "__export_tool_world",
    default_bindings_module: "tollgate_sdk::bindings",
});
