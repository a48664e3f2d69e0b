// The dashboard in a real browser (Debian's chromium, headless, driven by playwright-core from
// web/node_modules) against a GRPO job running on a local cluster, then after `tandem down`
// through `tandem dashboard`. Checks: every page loads without console errors; the job's charts
// have the job's points and grow while it runs without a reload; the jobs filter and the log
// filters narrow what is shown; `tandem job metrics` exports every step; /metrics passes
// `promtool check metrics`; the history dashboard shows the same job. Screenshots of each page go to --out.
//
//   node tests/browser/dashboard_test.mjs --bin BUILD/bin --source SRC --out DIR
//
// Exit codes: 0 passed, 1 failed, 77 skipped (no chromium or no web/node_modules: the reason is
// printed). Every wait has a deadline and the whole test a watchdog.
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith("--")) acc.push([a.slice(2), all[i + 1]]);
  return acc;
}, []));
const BIN = args.bin;
const SOURCE = args.source;
const OUT = args.out || fs.mkdtempSync(path.join(os.tmpdir(), "tandem-browser-out-"));
const CHROMIUM = process.env.TANDEM_CHROMIUM || "/usr/bin/chromium";
const STEPS = 150;
const WATCHDOG_MS = 170000;

function skip(reason) {
  console.log(`SKIPPED: ${reason}`);
  process.exit(77);
}
if (!BIN || !SOURCE) {
  console.error("usage: dashboard_test.mjs --bin BUILD/bin --source SRC [--out DIR]");
  process.exit(2);
}
if (!fs.existsSync(CHROMIUM)) skip(`no Chromium at ${CHROMIUM} (apt-get install chromium)`);
const playwrightPath = path.join(SOURCE, "web/node_modules/playwright-core/index.mjs");
if (!fs.existsSync(playwrightPath)) skip(`no ${playwrightPath} (run npm ci in web/)`);
const { chromium } = await import(playwrightPath);

const t0 = Date.now();
const log = (msg) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)} s] ${msg}`);
const failures = [];
function check(ok, what) {
  if (ok) log(`ok: ${what}`);
  else { failures.push(what); log(`FAILED: ${what}`); }
  return ok;
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "tandem-browser-"));
const runDir = path.join(tmp, "run");
const cleanups = [];
async function cleanup() {
  for (const fn of cleanups.reverse()) {
    try { await fn(); } catch (e) { log(`cleanup: ${e.message}`); }
  }
  fs.rmSync(tmp, { recursive: true, force: true });
}
const watchdog = setTimeout(async () => {
  log(`FAILED: the test ran past its ${WATCHDOG_MS / 1000} s watchdog`);
  await cleanup();
  process.exit(1);
}, WATCHDOG_MS);

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}
function tandem(...cliArgs) {
  const r = spawnSync(path.join(BIN, "tandem"), cliArgs, { encoding: "utf8", timeout: 60000 });
  return { code: r.status, out: (r.stdout || "") + (r.stderr || "") };
}
async function until(what, fn, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

let exitCode = 0;
const consoleErrors = [];  // from every page, reported on failure too
try {
  // ---- a local cluster and a GRPO job ----
  const [agentPort, httpPort] = [await freePort(), await freePort()];
  const clusterFile = path.join(tmp, "cluster.yaml");
  const node = (id, role) => `  - {id: ${id}, role: ${role}, host: 127.0.0.1, resources: {cpus: 2}}\n`;
  fs.writeFileSync(clusterFile,
    `name: browser\nrun_dir: ${runDir}\ncoordinator:\n  agent_port: ${agentPort}\n  http_port: ${httpPort}\n` +
    `  heartbeat_ms: 200\n  dead_after_ms: 1000\nnodes:\n` +
    node("trainer-0", "trainer") + node("rollout-0", "rollout") + node("rollout-1", "rollout"));
  const up = tandem("up", "-f", clusterFile, "--timeout-s", "20");
  if (up.code !== 0) throw new Error(`tandem up failed:\n${up.out}`);
  cleanups.push(() => tandem("down", "--run-dir", runDir));
  const base = `http://127.0.0.1:${httpPort}`;
  const token = fs.readFileSync(path.join(runDir, "api-token"), "utf8").trim();
  const api = async (p) => {
    const r = await fetch(base + p, { headers: { Authorization: `Bearer ${token}` } });
    if (!r.ok) throw new Error(`GET ${p}: ${r.status} ${await r.text()}`);
    return r.json();
  };
  const sub = tandem("job", "submit", "-f", path.join(SOURCE, "configs/jobs/grpo-reverse.yaml"),
                     `algorithm.steps=${STEPS}`, "algorithm.warm_start_steps=20", "--run-dir", runDir);
  if (sub.code !== 0) throw new Error(`job submit failed:\n${sub.out}`);
  const job = "job-000001";
  log(`submitted ${job} (${STEPS} steps)`);

  // ---- the browser ----
  const profile = fs.mkdtempSync(path.join(tmp, "chromium-profile-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    // CI runs as root: Chromium needs --no-sandbox there. Nothing may leave the machine.
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1400, height: 1000 },
  });
  cleanups.push(() => context.close());
  const page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(`${page.url()}: ${m.text()}`); });
  page.on("pageerror", (e) => consoleErrors.push(`${page.url()}: ${e.message}`));
  const loads = () => page.evaluate(() => Number(document.body.getAttribute("data-loaded") || 0));
  const open = async (url) => {
    await page.goto(url);
    await until(`${url} to load its data`, async () => (await loads()) >= 1, 15000);
  };
  const attr = (sel, name) => page.evaluate(([s, n]) => {
    const e = document.querySelector(s);
    return e ? Number(e.getAttribute(n)) : -1;
  }, [sel, name]);
  const shot = (name) => page.screenshot({ path: path.join(OUT, name), fullPage: true });
  fs.mkdirSync(OUT, { recursive: true });

  // Cluster: three nodes, the running job's actors on them.
  await open(`${base}/?token=${token}#/cluster`);
  await until("the job's actors on the cluster page", () =>
    page.evaluate((j) => document.querySelector("#nodes").textContent.includes(`${j}/trainer-0`), job), 15000);
  check(await page.locator("#nodes tbody tr").count() === 3, "the cluster page lists 3 nodes");
  await shot("cluster.png");

  // Jobs: the job is listed; a filter that matches nothing empties the table.
  await open(`${base}/#/jobs`);
  await until("the job in the jobs table", () => page.evaluate(() => Number(document.querySelector("#jobs").getAttribute("data-rows")) >= 1), 10000);
  await page.fill("#job-filter", "no-such-job");
  check(await attr("#jobs", "data-rows") === 0, "the jobs filter narrows the table to nothing");
  await page.fill("#job-filter", "grpo");
  check(await attr("#jobs", "data-rows") === 1, "the jobs filter 'grpo' keeps the job");

  // One job: the charts get points and keep growing without a reload.
  await open(`${base}/#/job/${job}`);
  const rewardPoints = () => attr('[data-chart="reward"]', "data-points");
  const first = await until("points in the reward chart", async () => { const n = await rewardPoints(); return n > 0 ? n : 0; }, 30000);
  const state = (await api(`/api/v1/jobs/${job}`)).state;
  if (state === "RUNNING") {
    const later = await until("the reward chart to grow while the job runs", async () => {
      const n = await rewardPoints();
      return n > first ? n : 0;
    }, 20000).catch(() => 0);
    check(later > first, `the reward chart grew live (${first} -> ${later} points) without a reload`);
  } else {
    log(`note: the job was ${state} before a second poll, so live growth was not observed`);
  }

  // Wait for the job to end, then everything it recorded must be on the page.
  const final = await until(`${job} to finish`, async () => {
    const j = await api(`/api/v1/jobs/${job}`);
    return ["SUCCEEDED", "FAILED", "CANCELLED"].includes(j.state) ? j : null;
  }, 90000);
  check(final.state === "SUCCEEDED", `${job} succeeded (${final.state} ${final.reason || ""})`);
  const steps = (await api(`/api/v1/jobs/${job}/metrics?limit=10000`)).metrics.length;
  const versionCount = (await api(`/api/v1/jobs/${job}/versions`)).versions.length;
  // The export for notebooks has every step.
  const csv = tandem("job", "metrics", job, "--output", "csv", "--run-dir", runDir);
  const csvLines = csv.out.trim().split("\n");
  check(csv.code === 0 && csvLines.length === steps + 1 && csvLines[0].startsWith("step,"),
        `tandem job metrics --output csv has a header and ${steps} rows (${csvLines.length - 1})`);
  const exported = tandem("job", "metrics", job, "--output", "json", "--run-dir", runDir);
  check(exported.code === 0 && JSON.parse(exported.out).metrics.length === steps,
        `tandem job metrics --output json has ${steps} steps`);
  const polls = await loads();
  await until("the page to poll the finished job", async () => (await loads()) >= polls + 2, 10000);
  const live = {
    reward: await rewardPoints(),
    kl: await attr('[data-chart="KL"]', "data-points"),
    versions: await attr("#version-timeline", "data-points"),
    fetches: await attr("#version-timeline", "data-fetches"),
    fetchRows: await page.locator("#versions .fetch-row").count(),
  };
  check(live.reward === 3 * steps, `the reward chart has mean/min/max of all ${steps} steps (${live.reward} points)`);
  check(live.kl === steps, `the KL chart has ${steps} points (${live.kl})`);
  const histPoints = await attr('[data-chart^="staleness histogram"]', "data-points");
  check(histPoints >= steps, `the staleness histogram has a share for each of the ${steps} steps (${histPoints} points)`);
  check(live.versions === versionCount, `the version timeline has all ${versionCount} versions (${live.versions})`);
  check(live.fetches > 0 && live.fetchRows > 0,
        `the version timeline shows the rollouts' fetches (${live.fetches} points, ${live.fetchRows} rows)`);
  await page.screenshot({ path: path.join(OUT, "job.png") });
  await page.evaluate(() => document.querySelector("#versions-h").scrollIntoView());
  await page.screenshot({ path: path.join(OUT, "versions.png") });
  await page.evaluate(() => document.querySelector("#events-h").scrollIntoView());
  await page.screenshot({ path: path.join(OUT, "events.png") });

  // Logs: a text filter and an actor filter narrow the lines.
  const allLines = await attr("#logs", "data-lines");
  check(allLines > 0, `the job's logs are shown (${allLines} lines)`);
  await page.fill("#log-text", "pushing trajectories");
  const textLines = await attr("#logs", "data-lines");
  check(textLines > 0 && textLines < allLines, `a text filter narrows the logs (${allLines} -> ${textLines})`);
  await page.fill("#log-text", "");
  await page.selectOption("#log-actor", `${job}/trainer-0`);
  const actorLines = await attr("#logs", "data-lines");
  check(actorLines > 0 && actorLines < allLines, `an actor filter narrows the logs (${allLines} -> ${actorLines})`);
  await page.evaluate(() => document.querySelector("#logs-h").scrollIntoView());
  await page.screenshot({ path: path.join(OUT, "job-logs.png") });
  await page.selectOption("#log-actor", "");

  await open(`${base}/#/jobs`);
  await shot("jobs.png");

  // Logs of every process: merged, narrowed by process and by job.
  await open(`${base}/#/logs`);
  const processLines = await until("lines on the logs page", async () => {
    const n = await attr("#plogs", "data-lines");
    return n > 0 ? n : 0;
  }, 10000);
  await page.selectOption("#plog-process", "coordinator");
  const coordLines = await attr("#plogs", "data-lines");
  check(coordLines > 0 && coordLines < processLines,
        `the process filter narrows the logs of all processes (${processLines} -> ${coordLines})`);
  await page.selectOption("#plog-process", "");
  await page.fill("#plog-job", job);
  const jobLines = await attr("#plogs", "data-lines");
  check(jobLines > 0 && jobLines < processLines, `the job filter narrows them (${processLines} -> ${jobLines})`);
  await page.fill("#plog-job", "");
  await page.screenshot({ path: path.join(OUT, "logs.png") });

  // /metrics: the job's per-step metrics, valid for Prometheus.
  const metrics = await (await fetch(`${base}/metrics`, { headers: { Authorization: `Bearer ${token}` } })).text();
  check(metrics.includes(`tandem_job_rollout_reward_mean{job="${job}",name="grpo-reverse"}`),
        "/metrics has tandem_job_rollout_reward_mean for the job");
  check(metrics.includes(`tandem_weights_trajectory_staleness_versions_count{actor="${job}/trainer-0",job="${job}"}`),
        "/metrics has the trainer's staleness histogram");
  check(/tandem_weights_fetch_seconds_bucket\{actor="[^"]*rollout-0"/.test(metrics) &&
        metrics.includes(`tandem_weights_versions_published_total{actor="${job}/trainer-0",job="${job}"}`),
        "/metrics has the rollouts' fetch histogram and the trainer's published versions");
  const promtool = spawnSync("promtool", ["check", "metrics"], { input: metrics, encoding: "utf8" });
  if (promtool.error) log("note: no promtool on PATH; /metrics not linted here (apt-get install prometheus)");
  else check(promtool.status === 0, `promtool check metrics accepts /metrics ${promtool.stdout}${promtool.stderr}`);

  // ---- after tandem down: the same job from the state directory ----
  const down = tandem("down", "--run-dir", runDir);
  check(down.code === 0, "tandem down");
  const history = spawn(path.join(BIN, "tandem"), ["dashboard", "--run-dir", runDir, "--port", "0"],
                        { stdio: ["ignore", "pipe", "pipe"] });
  cleanups.push(() => history.kill("SIGTERM"));
  let historyOut = "";
  history.stdout.on("data", (d) => { historyOut += d; });
  history.stderr.on("data", (d) => { historyOut += d; });
  const url = await until("tandem dashboard to print its URL", () => (historyOut.match(/http:\/\/\S+/) || [])[0], 10000);
  log(`history dashboard at ${url}`);
  await open(`${url}#/job/${job}`);
  await until("history charts", async () => (await rewardPoints()) > 0, 10000);
  const hist = {
    reward: await rewardPoints(),
    versions: await attr("#version-timeline", "data-points"),
    fetches: await attr("#version-timeline", "data-fetches"),
    lines: await attr("#logs", "data-lines"),
    mode: await page.textContent("#mode"),
  };
  check(hist.reward === live.reward, `after tandem down the reward chart has the same ${live.reward} points (${hist.reward})`);
  check(hist.versions === live.versions, `after tandem down the version timeline has the same ${live.versions} versions (${hist.versions})`);
  // The actors report their newest 16 fetches each: the live page collected more as they came.
  check(hist.fetches > 0 && hist.fetches <= live.fetches,
        `after tandem down the timeline has the rollouts' last fetches (${hist.fetches} of ${live.fetches})`);
  check(hist.lines === allLines, `after tandem down the logs have the same ${allLines} lines (${hist.lines})`);
  check(hist.mode.includes("history"), `the history dashboard says so ("${hist.mode}")`);
  await page.screenshot({ path: path.join(OUT, "history-job.png") });
  await open(`${url}#/logs`);
  check(await attr("#plogs", "data-lines") >= processLines,
        `after tandem down the logs page still has every process's lines (${await attr("#plogs", "data-lines")})`);
  await open(`${url}#/jobs`);
  check(await page.locator("#jobs tbody tr").count() === 1, "the history jobs page lists the job");

  check(consoleErrors.length === 0, `no console errors (${consoleErrors.join(" | ")})`);
} catch (e) {
  failures.push(e.message);
  log(`FAILED: ${e.stack || e.message}`);
  if (consoleErrors.length) log(`console errors: ${consoleErrors.join(" | ")}`);
} finally {
  clearTimeout(watchdog);
  await cleanup();
}
if (failures.length) {
  console.log(`${failures.length} check(s) failed:\n  ${failures.join("\n  ")}`);
  exitCode = 1;
} else {
  log(`passed; screenshots in ${OUT}`);
}
process.exit(exitCode);
