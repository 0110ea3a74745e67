/** The pure parts of a microVM's pod network (src/backends/microvm/podnet.ts): which namespace a spec names, and the guest's command line. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { guestNetArgs } from '../../src/backends/microvm/podnet.js';
import { engineNetwork, specNetns } from '../../src/spec/network.js';

describe('microvm pod network', () => {
  it('takes the spec\'s network namespace: a path, a new one, or none (the host\'s)', () => {
    assert.deepEqual(specNetns({ linux: { namespaces: [{ type: 'pid' }, { type: 'network', path: '/run/netns/p' }] } }), { path: '/run/netns/p' });
    assert.deepEqual(specNetns({ linux: { namespaces: [{ type: 'network' }] } }), {});
    assert.deepEqual(specNetns({ linux: { namespaces: [{ type: 'network', path: '' }] } }), {});
    assert.equal(specNetns({ linux: { namespaces: [{ type: 'pid' }] } }), undefined);
    assert.equal(specNetns({}), undefined);
  });

  it('calls a namespace the engine\'s when it comes by path or a hook runs once it exists', () => {
    const hook = { path: '/usr/bin/dockerd' };
    assert.equal(engineNetwork({ linux: { namespaces: [{ type: 'network', path: '/run/netns/p' }] } }), true);
    assert.equal(engineNetwork({ linux: { namespaces: [{ type: 'network' }] }, hooks: { prestart: [hook] } }), true);
    assert.equal(engineNetwork({ linux: { namespaces: [{ type: 'network' }] }, hooks: { createRuntime: [hook] } }), true);
    assert.equal(engineNetwork({ linux: { namespaces: [{ type: 'network' }] }, hooks: { poststart: [hook] } }), false);
    assert.equal(engineNetwork({ linux: { namespaces: [{ type: 'network' }] } }), false);
    assert.equal(engineNetwork({ linux: { namespaces: [] }, hooks: { prestart: [hook] } }), false);
  });

  it('gives the guest the MTU, every address and every route, gateways after a comma', () => {
    const args = guestNetArgs({
      name: 'eth0',
      mac: '02:42:0a:00:00:02',
      mtu: 1450,
      addresses: [{ family: 4, address: '10.0.0.2', prefix: 24 }, { family: 6, address: 'fd00::2', prefix: 64 }],
      routes: [{ family: 4, dst: '0.0.0.0', prefix: 0, gateway: '10.0.0.1' }, { family: 4, dst: '192.168.5.0', prefix: 24 }, { family: 6, dst: '::', prefix: 0, gateway: 'fd00::1' }],
    });
    assert.equal(args, 'moat.net=static moat.mtu=1450 moat.addr=10.0.0.2/24 moat.addr=fd00::2/64 moat.route=0.0.0.0/0,10.0.0.1 moat.route=192.168.5.0/24 moat.route=::/0,fd00::1');
  });
});
