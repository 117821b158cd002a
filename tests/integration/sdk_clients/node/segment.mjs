// Six calls through @segment/analytics-node, unchanged, then closeAndFlush.
// Usage: node segment.mjs HOST_URL WRITE_KEY RUN_ID
// Prints one JSON line with the messageIds the SDK assigned (each call's callback gets the
// delivered context); exits 1 if the SDK emitted an 'error' (delivery failure).
import { Analytics } from '@segment/analytics-node'

const [host, writeKey, runId] = process.argv.slice(2)
const analytics = new Analytics({
  writeKey,
  host,
  flushInterval: 100,
  maxRetries: 2,
  httpRequestTimeout: 5000,
})
const errors = new Set()
analytics.on('error', (err) => errors.add(`${err.code}: ${err.reason?.message ?? err.reason}`))

const messageIds = {}
const delivered = (kind) => (_err, ctx) => {
  messageIds[kind] = ctx.event.messageId
}

const userId = `user-${runId}`
analytics.track(
  { userId, event: 'Order Completed', properties: { revenue: 19.99, currency: 'USD' } },
  delivered('track'),
)
analytics.identify(
  { userId, traits: { email: 'ada@example.com', plan: 'pro' } },
  delivered('identify'),
)
analytics.page({ userId, name: 'Pricing', properties: { path: '/pricing' } }, delivered('page'))
analytics.screen({ userId, name: 'Home' }, delivered('screen'))
analytics.group({ userId, groupId: `acme-${runId}`, traits: { name: 'Acme' } }, delivered('group'))
analytics.alias({ previousId: `anon-${runId}`, userId }, delivered('alias'))
await analytics.closeAndFlush({ timeout: 25000 })

if (Object.keys(messageIds).length !== 6) errors.add('not every call completed before the flush timeout')
console.log(JSON.stringify({ sdk: '@segment/analytics-node', version: analytics.VERSION, messageIds }))
if (errors.size) {
  console.error(`delivery failed: ${[...errors].join('; ')}`)
  process.exit(1)
}
