//! `fixture-ungranted`: a test fixture that opens a TCP connection, so the component imports
//! `wasi:sockets/*`. No Tollgate policy grants sockets through WASI, so the host must refuse
//! it (at link time or with a denied connect), never let it through.

use std::io::ErrorKind;
use std::net::TcpStream;

use tollgate_sdk::prelude::*;

const TARGET: &str = "127.0.0.1:9";

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {}

#[derive(Serialize)]
struct Output {
    connected: bool,
}

struct FixtureUngranted;

impl Tool for FixtureUngranted {
    const NAME: &'static str = "fixture-ungranted";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Test fixture: connects to 127.0.0.1:9 over TCP without any grant.";
    type Input = Input;
    type Output = Output;

    fn run(_ctx: &Context, _input: Input) -> Result<Output, Error> {
        match TcpStream::connect(TARGET) {
            Ok(_stream) => Ok(Output { connected: true }),
            Err(error) if error.kind() == ErrorKind::PermissionDenied => {
                Err(Error::permission(format!("connect {TARGET}: {error}")))
            }
            Err(error) => Err(Error::fatal(format!("connect {TARGET}: {error}"))),
        }
    }
}

tollgate_sdk::export_tool!(FixtureUngranted);
