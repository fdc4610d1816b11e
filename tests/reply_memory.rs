//! Memory per mail (issue 11, point 17): one mail within
//! `max_message_bytes` costs at most a small multiple of its size through
//! `inbound::parse` and `reply::new_text` (what the workflow calls),
//! however many lines it has. Measured with a counting allocator: the peak
//! of live heap bytes while the mail is built, parsed and split, against
//! the mail's size. (benches/throughput.rs row 4c measures the same as
//! peak RSS of a release build.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    // A growing buffer costs its new size, not old plus new: large blocks
    // grow in place or by remapping (glibc's mremap), without a copy.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let grow = new_size - layout.size();
                let live = LIVE.fetch_add(grow, Ordering::Relaxed) + grow;
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak heap bytes above the current level while `f` runs.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed) - start)
}

fn mail_with_body(line: &[u8], lines: usize) -> Vec<u8> {
    let head = "From: Alice <alice@contoso.test>\r\nTo: invites@liaison.test\r\n\
                Subject: Re: lines\r\nMessage-ID: <big@contoso.test>\r\n\
                Content-Type: text/plain; charset=utf-8\r\n\r\n";
    let mut raw = Vec::with_capacity(head.len() + line.len() * lines);
    raw.extend_from_slice(head.as_bytes());
    for _ in 0..lines {
        raw.extend_from_slice(line);
    }
    raw
}

/// One test function: the allocator counts every thread, so the two
/// measurements must not run side by side.
#[test]
fn big_mails_cost_a_small_multiple_of_their_size() {
    three_million_one_character_lines_cost_at_most_three_times_the_mail();
    other_big_shapes_stay_within_three_times_the_mail();
}

/// The mail of the issue: 9 MB of 3 million one-character lines.
fn three_million_one_character_lines_cost_at_most_three_times_the_mail() {
    let lines = 3_000_000;
    let ((size, new_len), peak) = peak_of(|| {
        let raw = mail_with_body(b"a\r\n", lines);
        let mail = liaison_core::mail::inbound::parse(&raw, 10 << 20).expect("parses");
        let new_text = liaison_core::mail::reply::new_text(&mail.text);
        (raw.len(), new_text.len())
    });
    assert_eq!(new_len, 2 * lines - 1, "every line is new text");
    let ratio = peak as f64 / size as f64;
    println!("peak {peak} bytes for a {size}-byte mail: {ratio:.2}x");
    assert!(
        ratio <= 3.0,
        "peak {peak} bytes is {ratio:.2}x the {size}-byte mail"
    );
}

/// Other shapes of the same size stay within the bound too: every line
/// quoted, quote and answer alternating, blank lines.
fn other_big_shapes_stay_within_three_times_the_mail() {
    for (what, line, count, bound) in [
        ("quoted lines", &b"> q\r\n"[..], 1_800_000, 3.0),
        (
            "alternating quote and text",
            &b"> q\r\nx\r\n"[..],
            1_000_000,
            3.0,
        ),
        ("blank lines", &b"\r\n"[..], 4_500_000, 3.0),
        // One line that cleaning must copy (upper case): the splitter's
        // lower-cased copy of the line and the new text exist at once.
        ("one 9 MB upper-case line", &b"A"[..], 9_000_000, 4.1),
    ] {
        let (size, peak) = peak_of(|| {
            let raw = mail_with_body(line, count);
            let mail = liaison_core::mail::inbound::parse(&raw, 10 << 20).expect("parses");
            std::hint::black_box(liaison_core::mail::reply::new_text(&mail.text));
            raw.len()
        });
        let ratio = peak as f64 / size as f64;
        println!("{what}: peak {peak} bytes for a {size}-byte mail: {ratio:.2}x");
        assert!(
            ratio <= bound,
            "{what}: {ratio:.2}x the mail, over {bound}x"
        );
    }
}
