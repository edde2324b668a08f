"""TLS handshake analysis for DoT flows: record layer, hellos, ciphers, certificates."""

from .certs import TrustConfig, certificate_facts, validate_chain
from .ciphers import VERSION_NAMES, cipher_info
from .handshake import ClientHelloPeek, looks_like_tls, peek_client_hello
from .session import TlsSession

__all__ = [
    "VERSION_NAMES",
    "ClientHelloPeek",
    "TlsSession",
    "TrustConfig",
    "certificate_facts",
    "cipher_info",
    "looks_like_tls",
    "peek_client_hello",
    "validate_chain",
]
