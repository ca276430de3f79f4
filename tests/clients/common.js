// What the Node clients share: command-line options and the failure line the tests read.
'use strict';

function fail(message, details) {
  console.error(`FAIL: ${message}`);
  if (details !== undefined) console.error(JSON.stringify(details));
  process.exit(1);
}

// The value after `--name`, else `fallback`; a missing option without one fails.
function option(name, fallback) {
  const index = process.argv.indexOf(`--${name}`);
  if (index >= 0 && index + 1 < process.argv.length) return process.argv[index + 1];
  if (fallback === undefined) fail(`missing --${name}`);
  return fallback;
}

module.exports = { fail, option };
