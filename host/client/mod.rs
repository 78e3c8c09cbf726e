//! The bundled clients: the lecture's palindrome client and the word-guess game client.

pub mod palindrome;
pub mod word_guess;
