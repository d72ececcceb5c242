//! `fixture-ungranted`: a test fixture that reaches for the network through sockets, so the
//! component imports `wasi:sockets/*`: a TCP connect or a UDP send to 127.0.0.1:`port`, or a
//! name lookup. No Tollgate policy grants sockets, so the host must refuse each of them.

use std::io::ErrorKind;
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};

use tollgate_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Mode {
    Tcp,
    Udp,
    Lookup,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    mode: Mode,
    port: u16,
}

#[derive(Serialize)]
struct Output {
    reached: bool,
}

/// What the attempt did, for the error message.
fn attempt(input: &Input) -> (String, std::io::Result<()>) {
    let target = ("127.0.0.1", input.port);
    match input.mode {
        Mode::Tcp => (
            format!("connect 127.0.0.1:{}", input.port),
            TcpStream::connect(target).map(drop),
        ),
        Mode::Udp => (
            format!("send to 127.0.0.1:{} over UDP", input.port),
            UdpSocket::bind("127.0.0.1:0")
                .and_then(|socket| socket.send_to(b"x", target).map(drop)),
        ),
        Mode::Lookup => (
            "resolve example.com".to_owned(),
            ("example.com", input.port).to_socket_addrs().map(drop),
        ),
    }
}

struct FixtureUngranted;

impl Tool for FixtureUngranted {
    const NAME: &'static str = "fixture-ungranted";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Test fixture: TCP, UDP or a name lookup through sockets, without any grant.";
    type Input = Input;
    type Output = Output;

    fn run(_ctx: &Context, input: Input) -> Result<Output, Error> {
        match attempt(&input) {
            (_, Ok(())) => Ok(Output { reached: true }),
            (what, Err(error)) if error.kind() == ErrorKind::PermissionDenied => {
                Err(Error::permission(format!("{what}: {error}")))
            }
            (what, Err(error)) => Err(Error::fatal(format!("{what}: {error}"))),
        }
    }
}

tollgate_sdk::export_tool!(FixtureUngranted);
