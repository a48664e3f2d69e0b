// The JavaScript side of tandem-bench-tokenizer: Hugging Face's @huggingface/tokenizers encoding
// the same text with the same tokenizer files, single thread (Node runs JS on one thread).
//   node bench/model/tokenizer_bench.mjs MODEL_DIR TEXT_FILE ITERATIONS
// Prints one JSON line: seconds_best, seconds_first, tokens, ids_hash (FNV-1a over the ids).
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const lib = path.join(here, "..", "..", "tests", "reference", "tokenizers", "node_modules",
                      "@huggingface", "tokenizers", "dist", "tokenizers.mjs");
const { Tokenizer } = await import(pathToFileURL(lib).href);

const [modelDir, textFile, iterationsArg] = process.argv.slice(2);
const json = JSON.parse(fs.readFileSync(path.join(modelDir, "tokenizer.json"), "utf8"));
const config = JSON.parse(fs.readFileSync(path.join(modelDir, "tokenizer_config.json"), "utf8"));
const tok = new Tokenizer(json, config);
const text = fs.readFileSync(textFile, "utf8");

let first = 0, best = Infinity, ids = [];
for (let i = 0; i < Number(iterationsArg || 3); ++i) {
  const t0 = process.hrtime.bigint();
  ids = tok.encode(text, { add_special_tokens: false }).ids;
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (i === 0) first = s;
  best = Math.min(best, s);
}
let h = 0xcbf29ce484222325n;
for (const id of ids) h = BigInt.asUintN(64, (h ^ BigInt(id)) * 0x100000001b3n);
console.log(JSON.stringify({ seconds_best: best, seconds_first: first, tokens: ids.length, ids_hash: h.toString() }));
