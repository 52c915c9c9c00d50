// Runs one query with parameters through the official ClickHouse JavaScript client and
// streams its JSONEachRow result: prints each row as a JSON line, then {"rows": N}.
// Usage: node stream_rows.mjs URL USER PASSWORD QUERY PARAMS_JSON
import { createClient } from '@clickhouse/client'

const [url, username, password, query, params] = process.argv.slice(2)
const client = createClient({ url, username, password })
try {
  const result = await client.query({
    query, format: 'JSONEachRow', query_params: JSON.parse(params),
  })
  let rows = 0
  for await (const batch of result.stream()) {
    for (const row of batch) {
      console.log(JSON.stringify(row.json()))
      rows += 1
    }
  }
  console.log(JSON.stringify({ rows }))
} catch (error) {
  console.error(`${error.code ?? ''} ${error.type ?? ''} ${error.message}`)
  process.exitCode = 1
} finally {
  await client.close()
}
