// Twilio's own segment calculator (npm sms-segments-calculator), one JSON string per
// line in, "ENCODING SEGMENTS" per line out: tests/test_segments.py compares erp-sms's
// counts with it. Installed by `make test` into .venv/node when npm is present.
const readline = require("readline");
const { SegmentedMessage } = require("sms-segments-calculator");
const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const m = new SegmentedMessage(JSON.parse(line));
  process.stdout.write(`${m.encodingName} ${m.segmentsCount}\n`);
});
