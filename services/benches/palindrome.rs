//! The palindrome test alone: the walk from both ends against collect-then-compare, on the
//! bench's own requests and on longer lines. `cargo bench -p porthost-services`.

use divan::{Bencher, black_box};
use porthost_services::palindrome::{is_palindrome, is_palindrome_naive};

/// The two lines the bench's clients send (a palindrome and not), and a long line of each.
const LINES: [&str; 4] = [
    "А роза упала на лапу Азора",
    "Was it a car or a cat I saw? No",
    "Able was I ere I saw Elba, a man, a plan, a canal: Panama! amanaP :lanac a ,nalp a ,nam a ,ablE was I ere I saw elbA",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua",
];

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

fn main() {
    divan::main();
}

#[divan::bench(args = LINES)]
fn walk(bencher: Bencher, line: &str) {
    bencher.bench(|| is_palindrome(black_box(line), false));
}

#[divan::bench(args = LINES)]
fn naive(bencher: Bencher, line: &str) {
    bencher.bench(|| is_palindrome_naive(black_box(line)));
}
