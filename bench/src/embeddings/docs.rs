//! The documents embedded: deterministic, distinct, English-like sentences of a bounded length,
//! so every run (and the server-alone baseline) embeds exactly the same texts.

use std::collections::HashSet;

use anyhow::{Result, bail};

/// Common English words; sentences drawn from them tokenize to about one token per word.
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "on", "by", "at", "from", "this",
    "have", "not", "are", "but", "which", "or", "be", "one", "all", "would", "there", "their", "will", "when", "who",
    "make", "can", "more", "time", "about", "many", "then", "them", "write", "some", "so", "these", "her", "long",
    "thing", "see", "him", "two", "has", "look", "more", "day", "could", "go", "come", "did", "number", "sound",
    "most", "people", "over", "know", "water", "than", "call", "first", "may", "down", "side", "been", "now", "find",
    "head", "stand", "own", "page", "should", "country", "found", "answer", "school", "grow", "study", "still",
    "learn", "plant", "cover", "food", "sun", "four", "between", "state", "keep", "eye", "never", "last", "let",
    "thought", "city", "tree", "cross", "farm", "hard", "start", "might", "story", "saw", "far", "sea", "draw", "left",
    "late", "run", "while", "press", "close", "night", "real", "life", "few", "north", "open", "seem", "together",
    "next", "white", "children", "begin", "got", "walk", "example", "ease", "paper", "group", "always", "music",
    "those", "both", "mark", "often", "letter", "until", "mile", "river", "car", "feet", "care", "second", "book",
    "carry", "took", "science", "eat", "room", "friend", "began", "idea", "fish", "mountain", "stop", "once", "base",
    "hear", "horse", "cut", "sure", "watch", "color", "face", "wood", "main", "enough", "plain", "girl", "usual",
    "young", "ready", "above", "ever", "red", "list", "though", "feel", "talk", "bird", "soon", "body", "dog",
    "family", "direct", "pose", "leave", "song", "measure", "door", "product", "black", "short", "numeral", "class",
    "wind", "question", "happen", "complete", "ship", "area", "half", "rock", "order", "fire", "south", "problem",
    "piece", "told", "knew", "pass", "since", "top", "whole", "king", "space", "heard", "best", "hour", "better",
    "true", "during", "hundred", "five", "remember", "step", "early", "hold", "west", "ground", "interest", "reach",
    "fast", "verb", "sing", "listen", "six", "table", "travel", "less", "morning", "ten", "simple", "several", "vowel",
    "toward", "war", "lay", "against", "pattern", "slow", "center", "love", "person", "money", "serve", "appear",
    "road", "map", "rain", "rule", "govern", "pull", "cold", "notice", "voice", "unit", "power", "town", "fine",
    "certain", "fly", "fall", "lead", "cry", "dark", "machine", "note", "wait", "plan", "figure", "star", "box",
    "noun", "field", "rest", "correct", "able", "pound", "done", "beauty", "drive", "stood", "contain", "front",
    "teach", "week", "final", "gave", "green", "quick", "develop", "ocean", "warm", "free", "minute", "strong",
];

/// splitmix64: a fixed, dependency-free sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `n` distinct sentences of `min_words..=max_words` words, the same for the same arguments.
pub fn generate(n: usize, min_words: usize, max_words: usize) -> Result<Vec<String>> {
    if min_words == 0 || max_words < min_words {
        bail!("document length must be 1 ≤ min ≤ max words, got {min_words}–{max_words}");
    }
    let mut rng = Rng(0x5748_4152_4645_4d42);
    let mut seen = HashSet::with_capacity(n);
    let mut docs = Vec::with_capacity(n);
    while docs.len() < n {
        let words = min_words + rng.below(max_words - min_words + 1);
        let mut s = String::new();
        for i in 0..words {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(WORDS[rng.below(WORDS.len())]);
        }
        s.push('.');
        // Distinct texts: the handler sends a text once per job and caches it per tenant, so a
        // repeated text would be embedded fewer times than there are documents.
        if seen.insert(s.clone()) {
            docs.push(s);
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_bounded_and_repeatable() {
        let a = generate(500, 3, 5).unwrap();
        assert_eq!(a, generate(500, 3, 5).unwrap());
        assert_eq!(a.iter().collect::<HashSet<_>>().len(), 500);
        assert!(a.iter().all(|d| (3..=5).contains(&d.split(' ').count())));
    }
}
