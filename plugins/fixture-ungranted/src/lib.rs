//! `fixture-ungranted`: a test fixture that opens a TCP connection to 127.0.0.1:`port`, so the
//! component imports `wasi:sockets/*`. No Tollgate policy grants sockets, so the host must
//! refuse the connect, never let it through.

use std::io::ErrorKind;
use std::net::TcpStream;

use tollgate_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    port: u16,
}

#[derive(Serialize)]
struct Output {
    connected: bool,
}

struct FixtureUngranted;

impl Tool for FixtureUngranted {
    const NAME: &'static str = "fixture-ungranted";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Test fixture: connects to 127.0.0.1:<port> over TCP without any grant.";
    type Input = Input;
    type Output = Output;

    fn run(_ctx: &Context, input: Input) -> Result<Output, Error> {
        let target = ("127.0.0.1", input.port);
        match TcpStream::connect(target) {
            Ok(_stream) => Ok(Output { connected: true }),
            Err(error) if error.kind() == ErrorKind::PermissionDenied => Err(Error::permission(
                format!("connect 127.0.0.1:{}: {error}", input.port),
            )),
            Err(error) => Err(Error::fatal(format!(
                "connect 127.0.0.1:{}: {error}",
                input.port
            ))),
        }
    }
}

tollgate_sdk::export_tool!(FixtureUngranted);
