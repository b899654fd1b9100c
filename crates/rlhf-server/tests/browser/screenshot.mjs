// Screenshots of a running labelling app, for documentation (not a test):
//   node screenshot.mjs <base-url> <token> <out.png> [task|admin]
// Signs in with the token and captures the task page (or, for an admin token, the admin page).
import { launch } from './launch.mjs';

const [base, token, out, view = 'task'] = process.argv.slice(2);
if (!base || !token || !out) {
  console.error('usage: node screenshot.mjs <base-url> <token> <out.png> [task|admin]');
  process.exit(2);
}
const browser = await launch();
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  await page.goto(base);
  await page.fill('#token', token);
  await page.click('#sign-in');
  if (view === 'admin') {
    await page.click('#nav-admin');
    await page.waitForSelector('#admin:not([hidden])');
  } else {
    await page.waitForSelector('#responses li.response');
  }
  await page.waitForTimeout(300);
  await page.screenshot({ path: out, fullPage: view === 'admin' });
} finally {
  await browser.close();
}
