// Six calls through @rudderstack/rudder-sdk-node, unchanged, then flush.
// Usage: node rudder.mjs HOST_URL WRITE_KEY RUN_ID
// The SDK does not hand back the messageIds it assigned, so the JSON line has none.
// Exits 1 if any call's or the flush's callback got an error.
import { createRequire } from 'node:module'
import Analytics from '@rudderstack/rudder-sdk-node'

const { version } = createRequire(import.meta.url)('@rudderstack/rudder-sdk-node/package.json')
const [host, writeKey, runId] = process.argv.slice(2)
const errors = new Set()
const client = new Analytics(writeKey, {
  dataPlaneUrl: host,
  flushInterval: 100,
  retryCount: 2,
  timeout: 5000,
  // Without a handler the SDK rethrows a failed request as an unhandled rejection.
  errorHandler: () => {},
})

const pending = []
const call = (kind, message) =>
  pending.push(
    new Promise((resolve) =>
      client[kind](message, (err) => {
        if (err) errors.add(`${kind}: ${err.message}`)
        resolve()
      }),
    ),
  )

const userId = `user-${runId}`
call('track', { userId, event: 'Order Completed', properties: { revenue: 19.99, currency: 'USD' } })
call('identify', { userId, traits: { email: 'ada@example.com', plan: 'pro' } })
call('page', { userId, name: 'Pricing', properties: { path: '/pricing' } })
call('screen', { userId, name: 'Home' })
call('group', { userId, groupId: `acme-${runId}`, traits: { name: 'Acme' } })
call('alias', { previousId: `anon-${runId}`, userId })
await new Promise((resolve) =>
  client.flush((err) => {
    if (err) errors.add(`flush: ${err.message}`)
    resolve()
  }),
)
await Promise.all(pending)

console.log(JSON.stringify({ sdk: '@rudderstack/rudder-sdk-node', version }))
if (errors.size) {
  console.error(`delivery failed: ${[...errors].join('; ')}`)
  process.exit(1)
}
