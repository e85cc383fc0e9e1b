//! A small blocking HTTP/1.1 client over TCP and rustls: exactly what the registry conversation needs, with streaming bodies both ways.
