/**
 * Secure-channel micro benchmark, in process:
 *  1. seal and open throughput per frame, 64 B and 4 KiB payloads, batches of 1, 16 and 128
 *     frames (one native call per batch each way), for each cipher (AESGCM, ChaChaPoly), against
 *     node:crypto's chacha20-poly1305 in
 *     a careful TS loop doing the same work per frame (the whole header, checksum field 0, as
 *     associated data, counter nonce; opening checks the tag);
 *  2. handshakes per second for IK, NK and XX, both sides in this process;
 *  3. what compression costs and saves per payload size, for compressible and random data
 *     (where the default compression threshold comes from).
 * Outputs are checked before timing; the polycall and baseline runs alternate order. Rates are
 * per second of this process's CPU time (process.cpuUsage), so other load on a shared machine
 * stretches the wall clock but not the figures.
 * Run: npm run bench:secure (add --quick for a short smoke run that writes nothing).
 * Writes benchmarks/results/secure.md.
 */
import { createCipheriv, createDecipheriv, randomBytes as cryptoRandom } from 'node:crypto'
import { deepStrictEqual, ok } from 'node:assert'
import { FrameDecoder, Identity, MessageType, encodeFrame } from '../ts/index.js'
import { COMPRESSION_CAPABILITY, SecureChannel, type SealFrame, type SecureCipher, type SecurePattern } from '../ts/secure/channel.js'
import { fmt, machine, randomBytes, table, writeResult } from './common.js'

const quick = process.argv.includes('--quick')
const ROUND_MS = quick ? 60 : 400
const ROUNDS = quick ? 2 : 6

type Row = (string | number)[]

/** CPU seconds this process used since `since` (a process.cpuUsage() reading). */
function cpuSeconds(since: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(since)
  return (d.user + d.system) / 1e6
}

/** Runs `work` (which returns how many units it did) for about `ms` of CPU time; returns units per CPU second. */
function rate(ms: number, work: () => number): number {
  let units = 0
  const start = process.cpuUsage()
  let spent = 0
  while (spent * 1000 < ms) {
    for (let i = 0; i < 16; i++) units += work()
    spent = cpuSeconds(start)
  }
  return units / spent
}

function established(
  pattern: SecurePattern,
  compress = false,
  cipher?: SecureCipher,
): { client: SecureChannel; server: SecureChannel; done: () => void } {
  const serverId = Identity.generate()
  const clientId = Identity.generate()
  const flags = 0x0007 | (compress ? COMPRESSION_CAPABILITY : 0)
  const { channel: client, hello } = SecureChannel.initiator({
    pattern,
    identity: pattern === 'NK' ? undefined : clientId,
    serverKey: pattern === 'XX' ? undefined : serverId,
    flags,
    rekeyFrames: 0,
    rekeyBytes: 0,
    cipher,
  })
  const server = SecureChannel.responder({ identity: serverId, rekeyFrames: 0, rekeyBytes: 0 })
  server.readHello(hello)
  client.readReply(server.accept(flags, 1024))
  if (pattern === 'XX') server.readFinish(client.finish())
  return {
    client,
    server,
    done: () => {
      client.destroy()
      server.destroy()
      serverId.destroy()
      clientId.destroy()
    },
  }
}

/** The baseline: one direction of a sealed-frame layer written over node:crypto. */
class NodeCryptoDirection {
  readonly #key = cryptoRandom(32)
  readonly #nonce = Buffer.alloc(12)
  #n = 0

  #nextNonce(): Buffer {
    this.#nonce.writeUInt32LE(this.#n >>> 0, 4)
    this.#nonce.writeUInt32LE(Math.floor(this.#n / 2 ** 32), 8)
    this.#n++
    return this.#nonce
  }

  seal(frames: readonly SealFrame[]): Buffer {
    let total = 0
    for (const f of frames) total += 32 + (f.payload?.length ?? 0)
    const out = Buffer.allocUnsafe(total)
    let pos = 0
    for (const f of frames) {
      const payload = f.payload!
      const len = payload.length + 16
      const flags = (f.flags ?? 0) | 1
      out[pos] = 1
      out[pos + 1] = f.type
      out.writeUInt16LE(flags, pos + 2)
      out.writeUInt32LE(f.sequence, pos + 4)
      out.writeUInt32LE(len, pos + 8)
      // A sealed frame's checksum field is 0; the whole header is the associated data.
      out.writeUInt32LE(0, pos + 12)
      const cipher = createCipheriv('chacha20-poly1305', this.#key, this.#nextNonce(), { authTagLength: 16 })
      cipher.setAAD(out.subarray(pos, pos + 16), { plaintextLength: payload.length })
      const body = pos + 16
      out.set(cipher.update(payload), body)
      cipher.final()
      out.set(cipher.getAuthTag(), body + payload.length)
      pos += 16 + len
    }
    return out
  }

  /** Opens a batch produced by the twin direction (same key), frame by frame. */
  open(wire: Buffer, peer: NodeCryptoDirection): Buffer[] {
    const out: Buffer[] = []
    let pos = 0
    while (pos < wire.length) {
      const len = wire.readUInt32LE(pos + 8)
      const body = pos + 16
      const decipher = createDecipheriv('chacha20-poly1305', peer.#key, this.#nextNonce(), { authTagLength: 16 })
      decipher.setAAD(wire.subarray(pos, pos + 16), { plaintextLength: len - 16 })
      decipher.setAuthTag(wire.subarray(body + len - 16, body + len))
      const plain = decipher.update(wire.subarray(body, body + len - 16))
      decipher.final()
      out.push(plain)
      pos = body + len
    }
    return out
  }
}

/** The header fields of each frame in a stream of sealed frames, split by their length fields. */
function headers(wire: Buffer): number[][] {
  const out: number[][] = []
  for (let at = 0; at < wire.length; at += 16 + wire.readUInt32LE(at + 8)) {
    out.push([wire[at + 1]!, wire.readUInt16LE(at + 2), wire.readUInt32LE(at + 4), wire.readUInt32LE(at + 8), wire.readUInt32LE(at + 12)])
  }
  return out
}

function frames(size: number, batch: number): SealFrame[] {
  const payload = randomBytes(size)
  return Array.from({ length: batch }, (_, i) => ({ type: MessageType.Command, sequence: i, flags: 8, payload }))
}

async function throughputRow(size: number, batch: number, cipher: SecureCipher): Promise<Row> {
  const batchFrames = frames(size, batch)
  const { client, server, done } = established('IK', false, cipher)
  ok(client.state.cipher === cipher && server.state.cipher === cipher)
  const sender = new NodeCryptoDirection()
  const receiver = new NodeCryptoDirection()
  // Check both sides before timing: round trips, and the same wire layout.
  const ours = client.seal(batchFrames)
  const theirs = sender.seal(batchFrames)
  deepStrictEqual(ours.length, theirs.length)
  deepStrictEqual(headers(ours), headers(theirs))
  deepStrictEqual(server.push(ours).map((f) => Buffer.from(f.payload)), batchFrames.map((f) => f.payload))
  deepStrictEqual(receiver.open(theirs, sender), batchFrames.map((f) => f.payload))

  // Sealing alone advances the sender's nonce past what the opener saw: time it on its own pair.
  const sealer = established('IK', false, cipher)
  const sealerNode = new NodeCryptoDirection()
  const sums = { sealOurs: 0, sealNode: 0, openOurs: 0, openNode: 0 }
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? ['ours', 'node'] : ['node', 'ours']
    for (const who of order) {
      if (who === 'ours') sums.sealOurs += rate(ROUND_MS, () => (sealer.client.seal(batchFrames), batch))
      else sums.sealNode += rate(ROUND_MS, () => (sealerNode.seal(batchFrames), batch))
    }
    // Opening needs fresh sealed bytes in nonce order: seal a pool (untimed), then open it.
    const poolSize = Math.max(8, Math.ceil((quick ? 40_000 : 200_000) / batch))
    for (const who of order) {
      if (who === 'ours') {
        const pool = Array.from({ length: poolSize }, () => client.seal(batchFrames))
        const start = process.cpuUsage()
        for (const w of pool) server.push(w)
        sums.openOurs += (pool.length * batch) / cpuSeconds(start)
      } else {
        const pool = Array.from({ length: poolSize }, () => sender.seal(batchFrames))
        const start = process.cpuUsage()
        for (const w of pool) receiver.open(w, sender)
        sums.openNode += (pool.length * batch) / cpuSeconds(start)
      }
    }
  }
  done()
  sealer.done()
  const k = (n: number) => fmt(n / ROUNDS / 1000, 0)
  return [
    cipher,
    `${size} B`,
    batch,
    k(sums.sealOurs),
    k(sums.sealNode),
    `${(sums.sealOurs / sums.sealNode).toFixed(2)}x`,
    k(sums.openOurs),
    k(sums.openNode),
    `${(sums.openOurs / sums.openNode).toFixed(2)}x`,
  ]
}

function handshakeRow(pattern: SecurePattern): Row {
  const serverId = Identity.generate()
  const clientId = Identity.generate()
  const once = () => {
    const { channel: client, hello } = SecureChannel.initiator({
      pattern,
      identity: pattern === 'NK' ? undefined : clientId,
      serverKey: pattern === 'XX' ? undefined : serverId,
      flags: 0x0007,
    })
    const server = SecureChannel.responder({ identity: serverId })
    server.readHello(hello)
    const reply = client.readReply(server.accept(0x0007, 256))
    if (pattern === 'XX') {
      ok(reply.serverKey.equals(serverId.publicKey))
      server.readFinish(client.finish())
    }
    ok(client.established && server.established)
    client.destroy()
    server.destroy()
    return 1
  }
  once()
  let sum = 0
  for (let round = 0; round < ROUNDS; round++) sum += rate(ROUND_MS, once)
  serverId.destroy()
  clientId.destroy()
  const perSecond = sum / ROUNDS
  return [pattern, fmt(perSecond, 0), fmt(1e6 / perSecond, 0), fmt(1e6 / perSecond / 2, 0)]
}

/** A JSON-ish payload of `size` bytes: records with repeated keys, varying values. */
function jsonish(size: number): Buffer {
  let s = '['
  for (let i = 0; s.length < size; i++) s += `{"id":${i},"name":"user-${(i * 7919) % 10007}","active":${i % 3 === 0},"score":${(i * 31) % 977}},`
  return Buffer.from(s.slice(0, size))
}

function compressionRows(): Row[] {
  const rows: Row[] = []
  for (const size of [128, 256, 512, 1024, 2048, 4096, 16384]) {
    for (const [kind, payload] of [
      ['JSON', jsonish(size)],
      ['random', randomBytes(size)],
    ] as const) {
      const batch = frames(size, 16).map((f) => ({ ...f, payload }))
      const plain = established('IK')
      const packed = established('IK', true)
      const wirePlain = plain.client.seal(batch).length / 16
      const sealed = packed.client.seal(batch)
      const wirePacked = sealed.length / 16
      deepStrictEqual(packed.server.push(sealed).map((f) => Buffer.from(f.payload)), batch.map((f) => f.payload))
      let a = 0
      let b = 0
      for (let round = 0; round < ROUNDS; round++) {
        a += rate(ROUND_MS / 2, () => (plain.client.seal(batch), 16))
        b += rate(ROUND_MS / 2, () => (packed.client.seal(batch), 16))
      }
      plain.done()
      packed.done()
      rows.push([`${size} B`, kind, fmt(wirePlain - 32, 0), fmt(wirePacked - 32, 0), fmt(a / ROUNDS / 1000, 0), fmt(b / ROUNDS / 1000, 0), `${(b / a).toFixed(2)}x`])
    }
  }
  return rows
}

async function main(): Promise<void> {
  // A smoke check that the plain codec and the channel agree on what a v1 frame is.
  ok(new FrameDecoder().push(encodeFrame({ type: 3, sequence: 1, payload: Buffer.from('x') })).length === 1)
  const throughput: Row[] = []
  for (const cipher of ['AESGCM', 'ChaChaPoly'] as const) {
    for (const size of [64, 4096]) for (const batch of [1, 16, 128]) throughput.push(await throughputRow(size, batch, cipher))
  }
  const handshakes = (['IK', 'NK', 'XX'] as const).map(handshakeRow)
  const compression = compressionRows()
  const out = [
    '# Secure channel micro benchmark',
    '',
    '`npm run bench:secure`: in-process, one connection\'s session on each side, no sockets. Per CPU second; throughput in',
    'thousands of frames per second; polycall makes one native call per batch each way; the',
    'node:crypto baseline does the same work per frame in TypeScript.',
    '',
    machine(),
    '',
    '## Seal and open',
    '',
    table(['cipher', 'payload', 'batch', 'seal k/s', 'node:crypto seal k/s', 'ratio', 'open k/s', 'node:crypto open k/s', 'ratio'], throughput),
    '',
    '## Handshakes (both sides in this process)',
    '',
    table(['pattern', 'handshakes/s', 'µs per handshake', '≈ µs per side'], handshakes),
    '',
    '## Compression (seal of 16-frame batches, compression negotiated against not)',
    '',
    table(['payload', 'data', 'sealed body B', 'compressed body B', 'seal k/s', 'compressed seal k/s', 'ratio'], compression),
    '',
  ].join('\n')
  console.log(out)
  if (!quick) console.log(`\nwrote ${writeResult('secure.md', out)}`)
}

await main()
