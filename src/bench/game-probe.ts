// Listens to the guest's UDP game server for a while and prints the client's report as JSON:
// run inside the lab's client host to see a migration as a player would.
// Usage: node game-probe.js HOST SECONDS

import { GameClient } from '../net/game-client.js';

const [host, secondsText] = process.argv.slice(2);
const client = await GameClient.start({ host: host! });
await new Promise((r) => setTimeout(r, Number(secondsText) * 1000));
console.log(JSON.stringify(await client.stop()));
