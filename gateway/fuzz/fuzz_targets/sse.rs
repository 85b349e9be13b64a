//! The SSE parser gives the same events however the stream is cut into chunks, and the events it
//! writes read back as the same events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_gateway::sse::{Event, EventParser};

fn events(chunks: &[&[u8]]) -> Option<Vec<Event>> {
    let mut p = EventParser::default();
    let mut out = vec![];
    for c in chunks {
        p.push(c, |e| out.push(e)).ok()?;
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else { return };
    let whole = events(&[stream]);
    let at = (cut as usize).min(stream.len());
    let split = events(&[&stream[..at], &stream[at..]]);
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    let single = events(&bytes);
    assert_eq!(whole, split, "cut at {at}");
    assert_eq!(whole, single, "byte by byte");
    if let Some(evs) = whole {
        let written: Vec<u8> = evs.iter().flat_map(|e| e.to_bytes()).collect();
        let again = events(&[&written]).expect("what the parser writes it reads");
        assert_eq!(again, evs);
    }
});
