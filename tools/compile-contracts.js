// Compiles contracts/*.sol with the pinned solc (npm package, offline) and writes the runtime
// deployment bytecode to contracts/out/<Name>.bin. With --check it writes nothing and exits 1
// if a committed .bin differs from a fresh compile.
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const root = path.join(__dirname, '..', 'contracts');
const sources = {};
for (const file of fs.readdirSync(root).filter((f) => f.endsWith('.sol')).sort()) {
  sources[file] = { content: fs.readFileSync(path.join(root, file), 'utf8') };
}
const input = {
  language: 'Solidity',
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: 'cancun',
    outputSelection: { '*': { '*': ['evm.bytecode.object'] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === 'error');
if (errors.length) {
  for (const e of errors) console.error(e.formattedMessage);
  process.exit(1);
}
const check = process.argv.includes('--check');
let stale = 0;
for (const file of Object.keys(output.contracts)) {
  for (const [name, contract] of Object.entries(output.contracts[file])) {
    if (name === 'IERC20') continue;
    const bin = contract.evm.bytecode.object + '\n';
    const target = path.join(root, 'out', `${name}.bin`);
    if (check) {
      const committed = fs.existsSync(target) ? fs.readFileSync(target, 'utf8') : '';
      if (committed !== bin) {
        console.error(`contracts/out/${name}.bin does not match a compile of ${file} with solc ${solc.version()}`);
        stale += 1;
      }
    } else {
      fs.writeFileSync(target, bin);
      console.log(`wrote contracts/out/${name}.bin (${(bin.length - 1) / 2} bytes)`);
    }
  }
}
if (stale) process.exit(1);
if (check) console.log(`contracts/out matches solc ${solc.version()}`);
