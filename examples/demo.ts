/**
 * The end-to-end demo run by `npm start`: frames encoded, split across chunks the way TCP
 * delivers them, decoded, and a bad frame refused with its code.
 */
import { FrameDecoder, MessageType, encodeFrame, isPolyCallError, parseHandshake, buildHandshake } from '../ts/index.js'

const frames = [
  encodeFrame({ type: MessageType.Handshake, sequence: 1, payload: buildHandshake(0) }),
  encodeFrame({ type: MessageType.Auth, sequence: 2, payload: Buffer.from('{"username":"demo","password":"demo"}') }),
  encodeFrame({ type: MessageType.Command, sequence: 3, payload: Buffer.from('{"command":"status","data":{}}') }),
  encodeFrame({ type: MessageType.Heartbeat, sequence: 4 }),
]
const stream = Buffer.concat(frames)
console.log(`encoded ${frames.length} frames, ${stream.length} bytes`)

const decoder = new FrameDecoder()
for (let i = 0; i < stream.length; i += 7) {
  for (const f of decoder.push(stream.subarray(i, i + 7))) {
    const body = f.type === MessageType.Handshake ? JSON.stringify(parseHandshake(f.payload)) : f.payload.toString()
    console.log(`  ${MessageType[f.type]!.padEnd(9)} seq=${f.sequence} flags=0x${f.flags.toString(16).padStart(4, '0')} ${body}`)
  }
}
decoder.end()

const bad = Buffer.from(frames[2]!)
bad[20]! ^= 0x20
try {
  new FrameDecoder().push(bad)
} catch (err) {
  if (!isPolyCallError(err)) throw err
  console.log(`corrupted frame refused: ${err.code} (${err.message})`)
}
