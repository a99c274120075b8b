//! Recognising WireGuard messages by shape (type, reserved bytes, length), without decrypting.

/// True if a UDP payload has the shape of a WireGuard message: type 1 (initiation, 148 bytes),
/// 2 (response, 92), 3 (cookie reply, 64) or 4 (transport data, ≥ 32 bytes, a multiple of 16),
/// followed by three zero bytes.
pub fn looks_like_wireguard(payload: &[u8]) -> bool {
    if payload.len() < 4 || payload[1..4] != [0, 0, 0] {
        return false;
    }
    let len = payload.len();
    match payload[0] {
        1 => len == 148,
        2 => len == 92,
        3 => len == 64,
        4 => len >= 32 && len.is_multiple_of(16),
        _ => false,
    }
}
