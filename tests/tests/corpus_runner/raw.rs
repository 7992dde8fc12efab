//! A gRPC codec of plain bytes: the corpus sends hand-made protobuf bodies
//! (invalid UTF-8 in a string field, a varint too large for its field,
//! garbage) that the generated clients cannot produce.

use bytes::{Buf, BufMut};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Sends and receives message bodies as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

/// The encoder of [`BytesCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesEncoder;

/// The decoder of [`BytesCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesDecoder;

impl Codec for BytesCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = BytesEncoder;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesDecoder
    }
}

impl Encoder for BytesEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for BytesDecoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// Calls the unary method `path` with `body`; the reply's body or the status.
pub async fn call(channel: tonic::transport::Channel, path: &str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
    let path: tonic::codegen::http::uri::PathAndQuery = path
        .parse()
        .map_err(|e| Status::internal(format!("bad path {path:?}: {e}")))?;
    grpc.unary(tonic::Request::new(body), path, BytesCodec)
        .await
        .map(tonic::Response::into_inner)
}
