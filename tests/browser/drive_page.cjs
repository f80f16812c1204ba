// Open the reference web app in headless Chromium, choose files, print what the page answered (JSON on stdout).
// Usage: node drive_page.cjs '{"url": ..., "files": [[...], ...], "chromium": ..., "screenshot": ...}'
// "files" is a list of selections: each is chosen in the file input in turn (the page classifies them).
// Needs playwright-core on NODE_PATH; tests/test_webapp_browser.py runs it.
const { chromium } = require('playwright-core');

(async () => {
  const opts = JSON.parse(process.argv[2]);
  const browser = await chromium.launch({ executablePath: opts.chromium, headless: true,
                                          args: ['--no-sandbox', '--disable-gpu'] });
  const out = { console_errors: [], page_errors: [], requests_failed: [] };
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    page.on('console', (m) => { if (m.type() === 'error') out.console_errors.push(m.text()); });
    page.on('pageerror', (e) => out.page_errors.push(String(e)));
    page.on('response', (r) => { if (r.status() >= 400) out.requests_failed.push(`${r.status()} ${r.url()}`); });
    await page.goto(opts.url);
    await page.waitForSelector('body[data-state="ready"], body[data-state="error"]', { timeout: opts.timeout_ms });
    out.state = await page.getAttribute('body', 'data-state');
    out.cross_origin_isolated = await page.evaluate(() => self.crossOriginIsolated);
    let count = 0;
    if (out.state === 'ready') {
      for (const files of opts.files) {
        count += files.length;
        await page.setInputFiles('#file', files);
        await page.waitForSelector(`#results[data-count="${count}"]`, { state: 'attached', timeout: opts.timeout_ms });
      }
      out.results = JSON.parse(await page.textContent('#results'));
      out.error_messages = await page.$$eval('article.error .message', (els) => els.map((e) => e.textContent));
    }
    out.status = await page.textContent('#status');
    if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true });
  } catch (e) {
    out.driver_error = String(e);
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out));
})();
