// Runs one query through the official ClickHouse JavaScript client with response
// compression in CODEC (gzip, br, or none) and, for a non-empty BODY_CODEC, the request
// body compressed too; prints each JSONEachRow row as a JSON line.
// Usage: node compressed_query.mjs URL USER PASSWORD QUERY CODEC [BODY_CODEC]
import { createClient } from '@clickhouse/client'

const [url, username, password, query, codec, bodyCodec] = process.argv.slice(2)
const compression = {}
if (codec !== 'none') compression.response = { codec }
if (bodyCodec) compression.request = { codec: bodyCodec }
const client = createClient({ url, username, password, compression })
try {
  const result = await client.query({ query, format: 'JSONEachRow' })
  for (const row of await result.json()) console.log(JSON.stringify(row))
} catch (error) {
  console.error(`${error.code ?? ''} ${error.type ?? ''} ${error.message}`)
  process.exitCode = 1
} finally {
  await client.close()
}
