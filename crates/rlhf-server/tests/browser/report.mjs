// Opens a report.html from disk in Debian's Chromium and keeps a screenshot:
//   node report.mjs <report.html> <screenshot.png>
// Exits non-zero on a page error, a console error, a failed request or a chart-less page.
import { launch } from './launch.mjs';
import { pathToFileURL } from 'node:url';

const [report, out] = process.argv.slice(2);
if (!report || !out) {
  console.error('usage: node report.mjs <report.html> <screenshot.png>');
  process.exit(2);
}
const browser = await launch();
const problems = [];
let summary = {};
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()}`));
  await page.goto(pathToFileURL(report).href);
  summary = await page.evaluate(() => ({
    charts: document.querySelectorAll('figure svg').length,
    paths: document.querySelectorAll('figure svg path').length,
    tables: document.querySelectorAll('table').length,
    width: document.querySelector('figure svg')?.getBoundingClientRect().width ?? 0,
  }));
  if (summary.charts === 0 || summary.width < 100) problems.push(`no charts rendered: ${JSON.stringify(summary)}`);
  await page.screenshot({ path: out, fullPage: !process.env.VIEWPORT_ONLY });
} finally {
  await browser.close();
}
console.log(JSON.stringify({ ...summary, problems }));
process.exit(problems.length ? 1 : 0);
