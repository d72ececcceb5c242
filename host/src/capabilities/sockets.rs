//! Sockets (`wasi:sockets`): linked so that a tool whose runtime merely *imports* them (an
//! interpreter such as CPython carries the whole socket API) still loads, but never granted.
//! Creating a TCP or UDP socket and resolving a name are refused with `access-denied` and
//! journaled as `policy.denied`, as HTTP and file denials are. A tool reaches the network only
//! through a `wasi:http` grant, and changes the world only through effects.
//!
//! With no socket ever created, the resource interfaces (`tcp`, `udp`, `network`) are
//! wasmtime-wasi's own: their methods need a socket handle, which is never handed out.
//! `instance-network` does hand out a network handle, but it is only good for name lookup
//! (refused here) and socket calls (no socket). The context also disallows TCP, UDP and
//! lookups (`wasi.rs`), so wasmtime would refuse them even without this module.

use super::{AttemptContext, ToolState, journal_denial_if_running};
use crate::failure::{Failure, FailureClass};
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::p2::bindings::sockets::{
    self, ip_name_lookup, network::ErrorCode, tcp_create_socket, udp_create_socket,
};
use wasmtime_wasi::p2::{SocketError, SocketResult};
use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsCtxView, WasiSocketsView as _};

/// The socket interfaces (version track 0.2) the linker provides, every use refused.
pub const PROVIDED: &[&str] = &[
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// The rule a socket denial cites: there is no grant that allows one.
const RULE: &str = "sockets are never granted; use a tools.<name>.http grant or an effect";

/// wasmtime-wasi's sockets host, plus the attempt its denials are journaled against.
pub struct DeniedSockets<'a> {
    inner: WasiSocketsCtxView<'a>,
    /// None while the host calls `describe` at load time.
    attempt: Option<&'a AttemptContext>,
}

struct DeniedSocketsData;

impl HasData for DeniedSocketsData {
    type Data<'a> = DeniedSockets<'a>;
}

fn denied_sockets(state: &mut ToolState) -> DeniedSockets<'_> {
    DeniedSockets {
        inner: WasiSocketsCtxView {
            ctx: state.wasi.sockets(),
            table: &mut state.table,
        },
        attempt: state.attempt.as_deref(),
    }
}

impl DeniedSockets<'_> {
    /// Journals the refusal of `asked` and returns the error the tool sees.
    fn deny(&self, asked: &str) -> SocketError {
        let failure = Failure::new(
            FailureClass::Permission,
            format!("{asked}: denied (tools get no sockets)"),
        );
        journal_denial_if_running(self.attempt, asked, |_| RULE.to_owned(), &failure);
        ErrorCode::AccessDenied.into()
    }
}

// The create and lookup interfaces `use` the network interface's types, so their host must
// also convert its errors; wasmtime-wasi's conversion is the right one.
impl sockets::network::Host for DeniedSockets<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        sockets::network::Host::convert_error_code(&mut self.inner, error)
    }

    fn network_error_code(
        &mut self,
        error: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        sockets::network::Host::network_error_code(&mut self.inner, error)
    }
}

impl sockets::network::HostNetwork for DeniedSockets<'_> {
    fn drop(&mut self, network: Resource<sockets::network::Network>) -> wasmtime::Result<()> {
        sockets::network::HostNetwork::drop(&mut self.inner, network)
    }
}

impl tcp_create_socket::Host for DeniedSockets<'_> {
    fn create_tcp_socket(
        &mut self,
        family: sockets::network::IpAddressFamily,
    ) -> SocketResult<Resource<sockets::tcp::TcpSocket>> {
        Err(self.deny(&format!("create a TCP socket ({family:?})")))
    }
}

impl udp_create_socket::Host for DeniedSockets<'_> {
    async fn create_udp_socket(
        &mut self,
        family: sockets::network::IpAddressFamily,
    ) -> SocketResult<Resource<sockets::udp::UdpSocket>> {
        Err(self.deny(&format!("create a UDP socket ({family:?})")))
    }
}

impl ip_name_lookup::Host for DeniedSockets<'_> {
    fn resolve_addresses(
        &mut self,
        _network: Resource<sockets::network::Network>,
        name: String,
    ) -> SocketResult<Resource<ip_name_lookup::ResolveAddressStream>> {
        // The name is the guest's: bounded before it reaches the journal.
        let shown: String = name.chars().take(256).collect();
        Err(self.deny(&format!("resolve {shown:?}")))
    }
}

// No stream is ever created (resolving is refused above); these only keep the interface whole.
impl ip_name_lookup::HostResolveAddressStream for DeniedSockets<'_> {
    fn resolve_next_address(
        &mut self,
        stream: Resource<ip_name_lookup::ResolveAddressStream>,
    ) -> SocketResult<Option<sockets::network::IpAddress>> {
        self.inner.resolve_next_address(stream)
    }

    fn subscribe(
        &mut self,
        stream: Resource<ip_name_lookup::ResolveAddressStream>,
    ) -> wasmtime::Result<Resource<wasmtime_wasi::p2::DynPollable>> {
        self.inner.subscribe(stream)
    }

    fn drop(
        &mut self,
        stream: Resource<ip_name_lookup::ResolveAddressStream>,
    ) -> wasmtime::Result<()> {
        ip_name_lookup::HostResolveAddressStream::drop(&mut self.inner, stream)
    }
}

pub fn add_to_linker(l: &mut Linker<ToolState>) -> wasmtime::Result<()> {
    type T = ToolState;
    tcp_create_socket::add_to_linker::<T, DeniedSocketsData>(l, denied_sockets)?;
    udp_create_socket::add_to_linker::<T, DeniedSocketsData>(l, denied_sockets)?;
    ip_name_lookup::add_to_linker::<T, DeniedSocketsData>(l, denied_sockets)?;
    sockets::tcp::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    sockets::udp::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    sockets::instance_network::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    sockets::network::add_to_linker::<T, WasiSockets>(l, &Default::default(), T::sockets)
}

#[cfg(test)]
mod tests {
    use super::super::testing::Harness;
    use super::*;
    use crate::journal::EventName;
    use sockets::network::IpAddressFamily;
    use tcp_create_socket::Host as _;

    #[tokio::test]
    async fn every_socket_is_refused_as_access_denied_and_journaled() {
        let mut h = Harness::new("", 1 << 20);
        let mut view = denied_sockets(&mut h.state);
        let tcp = view.create_tcp_socket(IpAddressFamily::Ipv4);
        let udp =
            udp_create_socket::Host::create_udp_socket(&mut view, IpAddressFamily::Ipv6).await;
        for refused in [tcp.err(), udp.err()] {
            let code = refused.expect("refused").downcast().expect("an error code");
            assert_eq!(code, ErrorCode::AccessDenied);
        }
        let denials: Vec<_> = h
            .journal()
            .into_iter()
            .filter(|e| e.event == EventName::PolicyDenied.as_str())
            .collect();
        assert_eq!(denials.len(), 2);
        assert!(denials[0].fields["asked"].as_str().unwrap().contains("TCP"));
        assert_eq!(denials[1].fields["rule"], RULE);
    }

    #[test]
    fn outside_a_run_sockets_are_still_refused() {
        let mut state = Harness::unrecorded("");
        let mut view = denied_sockets(&mut state);
        assert!(view.create_tcp_socket(IpAddressFamily::Ipv4).is_err());
    }
}
