//! A blocking netlink request: one message out, every answer back up to its acknowledgement,
//! its dump's end or its error (the kernel's errno kept).

use std::fmt::Debug;
use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_sys::{Socket, SocketAddr};
use zeroize::Zeroizing;

/// What a request or an answer must zero before it is dropped (WireGuard's messages carry keys).
pub(crate) trait Wipe {
    /// Zeroes any secret the message holds.
    fn wipe(&mut self);
}

/// A netlink socket of one protocol (`NETLINK_ROUTE`, `NETLINK_GENERIC`), connected to the kernel.
#[derive(Debug)]
pub(crate) struct NetlinkSocket {
    socket: Socket,
    sequence: u32,
}

impl NetlinkSocket {
    /// Opens a socket of `protocol` (a `netlink_sys::protocols` constant).
    pub(crate) fn open(protocol: isize) -> io::Result<Self> {
        let mut socket = Socket::new(protocol)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Without it an error's reply would echo the whole request back (a private key among it).
        socket.set_cap_ack(true)?;
        Ok(Self { socket, sequence: 0 })
    }

    /// Sends `message` (with `NLM_F_REQUEST`, `NLM_F_ACK` and `flags`) and returns the messages
    /// of its answer: for a dump (`NLM_F_DUMP`) every part up to `NLMSG_DONE`, otherwise any
    /// reply up to the acknowledgement. An `NLMSG_ERROR` with a code is the kernel's errno; a
    /// reply that does not parse is `InvalidData`; a dump the kernel marks inconsistent
    /// (`NLM_F_DUMP_INTR`: the state changed while it was read) is `Interrupted`, to be asked
    /// again. Every buffer is zeroed when dropped, and the
    /// request and the answers read before an error are wiped ([`Wipe`]); the answers returned
    /// are the caller's to wipe.
    pub(crate) fn request<T>(&mut self, message: T, flags: u16) -> io::Result<Vec<T>>
    where
        T: NetlinkSerializable + NetlinkDeserializable + Debug + Wipe,
    {
        let mut answers = Vec::new();
        let result = self.exchange(message, flags, &mut answers);
        if result.is_err() {
            answers.iter_mut().for_each(Wipe::wipe);
        }
        result.map(|()| answers)
    }

    fn exchange<T>(&mut self, message: T, flags: u16, answers: &mut Vec<T>) -> io::Result<()>
    where
        T: NetlinkSerializable + NetlinkDeserializable + Debug + Wipe,
    {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut request =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(message));
        request.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        request.header.sequence_number = sequence;
        request.finalize();
        let mut out = Zeroizing::new(vec![0u8; request.buffer_len()]);
        request.serialize(&mut out);
        if let NetlinkPayload::InnerMessage(inner) = &mut request.payload {
            inner.wipe();
        }
        self.socket.send(&out, 0)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        loop {
            let datagram = self.receive()?;
            let mut offset = 0;
            while offset < datagram.len() {
                let mut reply = NetlinkMessage::<T>::deserialize(&datagram[offset..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let length = reply.header.length as usize;
                if length == 0 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "a netlink message of length 0"));
                }
                offset += length.next_multiple_of(4);
                if reply.header.sequence_number != sequence {
                    // A late answer to an earlier request: wiped, not used.
                    if let NetlinkPayload::InnerMessage(inner) = &mut reply.payload {
                        inner.wipe();
                    }
                    continue;
                }
                if reply.header.flags & NLM_F_DUMP_INTR != 0 {
                    if let NetlinkPayload::InnerMessage(inner) = &mut reply.payload {
                        inner.wipe();
                    }
                    return Err(io::Error::new(
                        io::ErrorKind::Interrupted,
                        "the dump was interrupted by a change",
                    ));
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                    NetlinkPayload::Error(_) if !dump => return Ok(()),
                    NetlinkPayload::Done(_) => return Ok(()),
                    _ => {}
                }
            }
        }
    }

    /// One whole datagram, however large (peeked for its size first, into a buffer zeroed too:
    /// its first bytes can hold part of a private key).
    fn receive(&self) -> io::Result<Zeroizing<Vec<u8>>> {
        let mut peek = Zeroizing::new(Vec::with_capacity(64));
        let size = self.socket.recv(&mut *peek, libc::MSG_PEEK | libc::MSG_TRUNC)?;
        let mut datagram = Zeroizing::new(Vec::with_capacity(size));
        let received = self.socket.recv(&mut *datagram, 0)?;
        datagram.truncate(received);
        Ok(datagram)
    }
}
