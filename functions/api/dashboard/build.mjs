// Builds the dashboard into exactly three files: DIR/index.html, DIR/app.js, DIR/app.css.
//   node build.mjs --outdir DIR
// Used by `npm run build` (DIR = dist) and by the handler's build.rs (DIR = $OUT_DIR/dashboard),
// which embeds the three files in the binary.

import { build } from 'esbuild';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const here = dirname(fileURLToPath(import.meta.url));

function outdirArgument(argv) {
  const i = argv.indexOf('--outdir');
  const inline = argv.find((a) => a.startsWith('--outdir='));
  const value = inline ? inline.slice('--outdir='.length) : i >= 0 ? argv[i + 1] : undefined;
  if (!value) {
    console.error('usage: node build.mjs --outdir DIR');
    process.exit(2);
  }
  return resolve(value);
}

const outdir = outdirArgument(process.argv.slice(2));

const result = await build({
  absWorkingDir: here,
  entryPoints: { app: 'src/main.ts' },
  bundle: true,
  minify: true,
  target: 'es2020',
  format: 'iife',
  platform: 'browser',
  sourcemap: false,
  splitting: false,
  legalComments: 'eof',
  charset: 'utf8',
  outdir: 'out',
  write: false,
  logLevel: 'warning',
  define: { 'process.env.NODE_ENV': '"production"' },
});

const wanted = new Map([
  ['app.js', null],
  ['app.css', null],
]);
for (const file of result.outputFiles) {
  const name = file.path.split(/[\\/]/).pop();
  if (!wanted.has(name)) {
    console.error(`unexpected build output ${name}`);
    process.exit(1);
  }
  wanted.set(name, file.contents);
}
mkdirSync(outdir, { recursive: true });
for (const [name, contents] of wanted) {
  if (!contents) {
    console.error(`the build made no ${name}`);
    process.exit(1);
  }
  writeFileSync(join(outdir, name), contents);
}
copyFileSync(join(here, 'src', 'index.html'), join(outdir, 'index.html'));

const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
for (const [name, contents] of wanted) {
  console.log(`${name}: ${kib(contents.length)} (${kib(gzipSync(contents).length)} gzipped)`);
}
console.log(`wrote index.html, app.js and app.css to ${outdir}`);
